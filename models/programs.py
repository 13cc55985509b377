"""Trained Transformer Programs on disk and as ``program:<task>`` models.

A program folder holds ``model.safetensors`` (the continuous parameters; the program is their
argmax) and ``config.json`` (schema version, task, vocabulary, architecture, fit settings,
accuracies, training time). Programs for every task of ``models.program_tasks`` ship in
``models/data/program-<task>/``; a missing one is trained on first use and cached.

``load_program_model`` turns the discretised program into TransformerLens weights
(``rasp.programs.program_weights``) that compute exactly what it computes, so every analysis
runs on it, with each head's and MLP's role known by construction.

Example:
    >>> lm = load_model("program:sort")                  # doctest: +SKIP
    >>> lm.predict([3, 1, 2, "EOS"])[:3]                 # doctest: +SKIP
    [1, 2, 3]
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from models.cache import atomic_folder, cache_dir
from models.checkpoints import read_weights
from models.errors import CheckpointError
from models.program_tasks import ProgramTask, program_task
from rasp.programs import FitConfig, FittedProgram, ProgramArchitecture, ProgramModel, fit_program
from rasp.programs.data import ProgramVocab

SCHEMA_VERSION = 1
FORMAT = "mechscope-transformer-program"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
#: The held-out test inputs the recorded accuracy was measured on.
TEST_SET_FILE = "test_set.json"
#: Programs shipped with the package.
SHIPPED_PROGRAMS = Path(__file__).parent / "data"


@dataclass(frozen=True)
class StoredProgram:
    """A program read back from its folder: the model, its vocabulary and its record."""

    model: ProgramModel
    vocab: ProgramVocab
    task: str
    meta: dict[str, Any]
    folder: Path


def program_dir(task: str) -> Path:
    """Where a trained program of ``task`` is cached."""
    return cache_dir() / "program" / task


def shipped_program_dir(task: str) -> Path:
    """Where the shipped program of ``task`` lives in the package."""
    return SHIPPED_PROGRAMS / f"program-{task}"


def save_program(folder: Path, fitted: FittedProgram, **extra: Any) -> Path:
    """Write a fitted program atomically (a kill leaves no half-written folder).

    Args:
        folder: the folder to create or replace.
        fitted: the output of ``fit_program``.
        extra: more JSON-safe fields for ``config.json`` (e.g. the machine it trained on).

    Returns:
        ``folder``.
    """
    model = fitted.model
    meta = {
        "schema_version": SCHEMA_VERSION,
        "format": FORMAT,
        "task": fitted.task,
        "vocab": fitted.vocab.to_dict(),
        "causal": bool(model.causal),
        "architecture": model.arch.to_dict(),
        "fit": {k: v for k, v in fitted.config.to_dict().items() if k != "architecture"},
        "metrics": fitted.metrics,
        "history": fitted.history,
        **extra,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_folder(Path(folder)) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True, default=_plain))
        if fitted.data is not None:
            tests = [list(s) for s in fitted.data.test.sequences]
            text = json.dumps(tests, separators=(",", ":"), default=_plain)
            (tmp / TEST_SET_FILE).write_text(text)
    return Path(folder)


def _plain(value: Any) -> Any:
    """JSON form of numpy scalars (``.item()``) and anything else (``str``)."""
    return value.item() if hasattr(value, "item") else str(value)


def read_test_set(folder: Path) -> list[list]:
    """The test inputs stored with a program.

    Raises:
        CheckpointError: when the file is missing or not a JSON list of lists.
    """
    path = Path(folder) / TEST_SET_FILE
    try:
        tests = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read the program's test set: {exc}") from exc
    if not isinstance(tests, list) or not all(isinstance(t, list) for t in tests):
        raise CheckpointError(f"{path}: field (root) must be a list of input lists")
    return tests


def read_program(folder: Path) -> StoredProgram:
    """Read a program folder back.

    Raises:
        CheckpointError: a missing/corrupt file, a wrong schema version or format, a missing
            field, or weights that do not fit the stored architecture (names file and field).
    """
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"program folder {folder} has no {CONFIG_FILE}")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise CheckpointError(
            f"{path}: field 'schema_version' is {meta.get('schema_version')!r}; "
            f"this mechscope reads {SCHEMA_VERSION}"
        )
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: field 'format' is {meta.get('format')!r}, not {FORMAT!r}")
    try:
        arch = ProgramArchitecture(**meta["architecture"])
        raw = meta["vocab"]
        vocab = ProgramVocab(
            tuple(raw["input_values"]), tuple(raw["output_values"]), int(raw["n_ctx"])
        )
        causal = bool(meta["causal"])
        task = str(meta["task"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: field {exc!s} is missing or invalid") from exc
    model = ProgramModel(
        arch,
        n_tokens=vocab.n_tokens,
        n_ctx=vocab.n_ctx,
        n_out=len(vocab.output_values),
        causal=causal,
    )
    state = read_weights(folder / WEIGHTS_FILE)
    expected = model.state_dict()
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise CheckpointError(
            f"{folder / WEIGHTS_FILE}: tensors do not match the architecture; "
            f"missing {missing[:4]}, unexpected {extra[:4]}"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{folder / WEIGHTS_FILE}: tensor {key!r} has shape {tuple(tensor.shape)}, "
                f"the architecture needs {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state)
    model.eval()
    return StoredProgram(model, vocab, task, meta, folder)


def train_and_save_program(
    name: str,
    folder: Path | None = None,
    *,
    progress: bool = True,
    device: str = "cpu",
    should_stop: Callable[[], bool] | None = None,
    **overrides: Any,
) -> Path:
    """Fit the program of a task with the authors' settings and save it.

    ``overrides`` naming a ``FitConfig`` field replace it; the others are stored as they are
    in ``config.json`` (e.g. ``machine="..."``). ``device`` is where it trains and
    ``should_stop`` ends it early, keeping the best program so far (see ``fit_program``).

    Returns:
        The program folder.
    """
    task: ProgramTask = program_task(name)
    known = {f.name for f in fields(FitConfig)}
    config = task.fit_config(**{k: v for k, v in overrides.items() if k in known})
    start = time.perf_counter()
    fitted = fit_program(task, config, progress=progress, device=device, should_stop=should_stop)
    return save_program(
        folder or program_dir(name),
        fitted,
        trained_seconds=round(time.perf_counter() - start, 1),
        paper_acc=task.paper_acc,
        torch_version=torch.__version__,
        **{k: v for k, v in overrides.items() if k not in known},
    )


def find_program(name: str, *, train_missing: bool = True) -> Path:
    """The folder of the program of task ``name``: cached, else shipped, else trained now.

    Raises:
        UnknownModelError: for a task without a program (lists the valid ones).
        CheckpointError: when none is stored and ``train_missing`` is false.
    """
    program_task(name)  # validates the name
    for folder in (program_dir(name), shipped_program_dir(name)):
        if (folder / CONFIG_FILE).is_file():
            return folder
    if not train_missing:
        raise CheckpointError(
            f"no trained program for program:{name} in {program_dir(name)} or "
            f"{shipped_program_dir(name)}; train it with train_and_save_program({name!r})"
        )
    return train_and_save_program(name)


def discrete_program(stored: StoredProgram):
    """The ``rasp.programs.DiscreteProgram`` of a stored program."""
    from rasp.programs.discrete import discretise

    return discretise(stored.model, stored.vocab)


def load_program_model(name: str, *, train_missing: bool = True, folder: Path | None = None):
    """``program:<name>`` as a ``LoadedModel`` (kind ``program``) computing the program exactly.

    Args:
        name: a task of ``models.program_tasks``.
        train_missing: train the program when none is stored (minutes on a CPU).
        folder: read this program folder instead of the cached/shipped one.

    Raises:
        UnknownModelError: for a task without a program.
        CheckpointError: for a missing (``train_missing=False``), corrupt or mismatched file.

    Example:
        >>> load_program_model("hist").predict([1, 2, 1])   # doctest: +SKIP
        [2, 1, 2]
    """
    stored = read_program(folder or find_program(name, train_missing=train_missing))
    if stored.task != name:
        raise CheckpointError(
            f"{stored.folder / CONFIG_FILE}: field 'task' is {stored.task!r}, expected {name!r}"
        )
    metrics = stored.meta.get("metrics", {})
    provenance = {
        "checkpoint": str(stored.folder),
        "test_acc": str(metrics.get("test_acc", "?")),
        "paper_acc": str(stored.meta.get("paper_acc", "?")),
        "trained_seconds": str(stored.meta.get("trained_seconds", "?")),
        "machine": str(stored.meta.get("machine", "?")),
    }
    return program_loaded_model(stored.model, stored.vocab, name, provenance)


def program_loaded_model(
    model: ProgramModel, vocab: ProgramVocab, name: str, provenance: dict[str, str] | None = None
):
    """A ``LoadedModel`` (kind ``program``) whose TransformerLens weights compute the
    discretised ``model`` exactly (``rasp.programs.program_weights``), with head roles."""
    from models.codec import TaskCodec
    from models.compiled import build_hooked
    from models.loaded import LoadedModel
    from models.loader import classify_decoder
    from models.spec import ModelSpec
    from rasp.programs.discrete import discretise
    from rasp.programs.weights import program_weights

    compiled = program_weights(discretise(model, vocab), name)
    outputs = tuple(vocab.output_values)
    return LoadedModel(
        model=build_hooked(compiled),
        spec=ModelSpec("program", name, f"program:{name}"),
        kind="program",
        provenance={
            "source": "Transformer Program (rasp.programs)",
            "task": name,
            **(provenance or {}),
        },
        codec=TaskCodec(("BOS", *vocab.input_values), vocab.n_ctx - 1, outputs),
        output_decoder=classify_decoder(outputs),
        head_roles=dict(compiled.head_roles),
        residual_labels=list(compiled.residual_labels),
    )
