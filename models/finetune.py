"""Task models at several training checkpoints, and task models fine-tuned on a second task.

Both reuse ``models.training.train_task_model`` and return ``LoadedModel``s named after what
they are (``task:induction@step200``, ``task:sort+reverse@300``), so every analysis (and the
circuit diff) takes them like any other model. Nothing here touches files: a session that
wants to keep them saves them with ``models.checkpoints.save_checkpoint``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from transformer_lens import HookedTransformer

from models.errors import TrainingError
from models.loaded import LoadedModel
from models.loader import classify_decoder
from models.spec import ModelSpec
from models.tasks import get_task
from models.training import (
    ModelConfig,
    TrainConfig,
    TrainReport,
    evaluate_task_model,
    train_task_model,
)


def _loaded(model: HookedTransformer, task_name: str, text: str, provenance: dict) -> LoadedModel:
    task = get_task(task_name)
    codec = task.codec()
    return LoadedModel(
        model,
        ModelSpec("task", task.name, text),
        "task",
        {"task": task.name, **{k: str(v) for k, v in provenance.items()}},
        codec=codec,
        output_decoder=classify_decoder(codec.output_vocab),
    )


def train_snapshots(
    task_name: str,
    steps: Sequence[int],
    *,
    config: TrainConfig | None = None,
    model_config: ModelConfig | None = None,
    evaluate: int = 500,
    progress: bool = False,
) -> tuple[list[LoadedModel], TrainReport]:
    """Train a task model once and keep it at each of ``steps``.

    Early stopping is switched off so that every requested step is reached.

    Args:
        task_name: a built-in task (``induction``, ``sort``, ...).
        steps: the checkpoints to keep (0 = the initialisation); training runs to the last.
        config: training settings (default: the task's, with ``steps`` = the last checkpoint).
        model_config: the architecture (default: the task's).
        evaluate: held-out sequences scored per checkpoint (0: none).
        progress: show a tqdm bar.

    Returns:
        One ``LoadedModel`` per step (``task:<task>@step<k>``, held-out accuracy in its
        provenance) and the training report.

    Raises:
        TrainingError: no steps, or a negative step.

    Example:
        >>> models, _ = train_snapshots("induction", [50, 1000])   # doctest: +SKIP
        >>> models[1].name
        'task:induction@step1000'
    """
    if not steps or min(steps) < 0:
        raise TrainingError(f"steps must be a non-empty list of steps >= 0, got {list(steps)}")
    task = get_task(task_name)
    base = config or task.train_config
    config = replace(base, steps=max(max(steps), 1), stop_after_perfect=None)
    kept: dict[int, HookedTransformer] = {}

    def keep(step: int, model: HookedTransformer) -> None:
        kept[step] = copy.deepcopy(model).eval()

    _, report = train_task_model(
        task, config, model_config=model_config, progress=progress,
        snapshot_steps=steps, on_snapshot=keep,
    )  # fmt: skip
    out = []
    for step in sorted(kept):
        prov: dict[str, Any] = {"step": step, "train_seed": config.seed, "lr": config.lr}
        if evaluate:
            prov["held_out_seq_acc"] = round(
                evaluate_task_model(kept[step], task, n=evaluate).seq_acc, 4
            )
        out.append(_loaded(kept[step], task.name, f"task:{task.name}@step{step}", prov))
    return out, report


def finetune_task_model(
    model: LoadedModel,
    task_name: str,
    *,
    steps: int = 300,
    lr: float = 1e-3,
    config: TrainConfig | None = None,
    evaluate: int = 500,
    progress: bool = False,
) -> tuple[LoadedModel, TrainReport]:
    """Fine-tune a task model on another task with the same vocabularies (e.g. sort -> reverse).

    Args:
        model: a ``task:`` model (or a snapshot); it is not changed.
        task_name: the task to fine-tune on.
        steps: optimiser steps (ignored when ``config`` is given).
        lr: peak learning rate (ignored when ``config`` is given).
        config: full training settings, else the task's with ``steps``/``lr``, no warm-up
            longer than a tenth of the steps, and no early stop.
        evaluate: held-out sequences scored on the new task (0: none).
        progress: show a tqdm bar.

    Returns:
        The fine-tuned ``LoadedModel`` (``<model>+<task>@<steps>``) and the report.

    Raises:
        TrainingError: a model that is not a task model, or vocabularies that differ.

    Example:
        >>> ft, _ = finetune_task_model(load_model("task:sort"), "reverse")   # doctest: +SKIP
    """
    if model.kind != "task":
        raise TrainingError(
            f"only task models can be fine-tuned here; {model.name!r} is {model.kind}"
        )
    task = get_task(task_name)
    config = config or replace(
        task.train_config, steps=steps, lr=lr, warmup=min(task.train_config.warmup, steps // 10),
        stop_after_perfect=None,
    )  # fmt: skip
    tuned, report = train_task_model(task, config, progress=progress, init=model.model)
    prov: dict[str, Any] = {
        "base": model.name,
        "finetune_task": task.name,
        "steps": report.steps_done,
    }
    if evaluate:
        prov["held_out_seq_acc"] = round(evaluate_task_model(tuned, task, n=evaluate).seq_acc, 4)
    name = f"{model.name}+{task.name}@{report.steps_done}"
    return _loaded(tuned, task.name, name, prov), report
