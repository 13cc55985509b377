"""Exact targets and random inputs of task-vocabulary models: the one place that knows them.

Task models (and their training snapshots or fine-tunes) are labelled by their task's target
function, Transformer Programs by their program task's, compiled library RASP programs by the
RASP interpreter. Inputs come from the task's own sampler, or uniformly from a compiled model's
vocabulary. Pages, probe suites and notebooks all build their datasets from these.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from models.errors import InputError, ModelError


class NoTargetsError(ModelError):
    """A model whose exact per-position targets are not known (pretrained, typed RASP)."""


def target_function(model: Any) -> Callable[[list], list]:
    """The exact per-position target function of ``model`` (``None`` where a position is not
    scored).

    Raises:
        NoTargetsError: for a model with no known target function.

    Example:
        >>> target_function(load_model("task:sort"))([3, 1, 2])   # doctest: +SKIP
        [1, 2, 3]
    """
    if model.kind == "task":
        from models.tasks import get_task

        return get_task(model.provenance.get("task", model.spec.name)).target
    if model.kind == "program":
        from models.program_tasks import program_task

        return program_task(model.spec.name).target
    if model.kind == "rasp":
        from rasp import LIBRARY, evaluate

        entry = LIBRARY.get(model.spec.name)
        if entry is None:
            raise NoTargetsError(
                f"no interpreter program is known for {model.name!r}, so its exact targets are "
                f"unknown; library programs: {', '.join(sorted(LIBRARY))}"
            )
        program = entry.build()
        return lambda seq: evaluate(program, seq)
    raise NoTargetsError(
        f"{model.name!r} ({model.kind}) has no exact targets; use a task:<name>, "
        "program:<task> or rasp:<program> model, or a text model with next-token data"
    )


def sample_inputs(
    model: Any, n: int, seed: int, lengths: tuple[int, int] | None = None
) -> list[list[Hashable]]:
    """``n`` seeded random inputs of a task-vocabulary model.

    Args:
        model: a ``task:``, ``program:`` or ``rasp:`` model.
        n: how many.
        seed: seeds the draw.
        lengths: ``(lo, hi)`` input lengths to draw from (default: any the model accepts).

    Raises:
        InputError: a model without a task vocabulary, or no allowed length in ``lengths``.
    """
    if getattr(model, "codec", None) is None:
        raise InputError(f"{model.name!r} has no task vocabulary to draw inputs from")
    rng = np.random.default_rng(seed)
    lo, hi = lengths or (1, model.codec.max_len)
    if model.kind == "program":
        from models.program_tasks import program_task

        ptask = program_task(model.spec.name)
        if lengths is None:
            return ptask.sample(n, rng)
        drawn = ptask.sample(max(1, n) * 20, rng)
        kept = [s for s in drawn if lo <= len(s) <= hi][:n]
        if len(kept) < n:
            raise InputError(f"program:{model.spec.name} rarely draws inputs of length {lo}..{hi}")
        return kept
    if model.kind == "task":
        from models.tasks import get_task

        task = get_task(model.provenance.get("task", model.spec.name))
        if lengths is None:
            return task.sample(n, rng)
        allowed = [k for k in task.lengths if lo <= k <= hi]
        if not allowed:
            raise InputError(
                f"no length of task {task.name!r} lies in {lo}..{hi}; its lengths: "
                f"{', '.join(map(str, task.lengths))}"
            )
        return [task.sample(1, rng, length=int(rng.choice(allowed)))[0] for _ in range(n)]
    values = list(model.codec.input_values)
    out = []
    for _ in range(n):
        k = int(rng.integers(lo, hi + 1))
        if model.spec.name == "sort_unique":  # its keys must be distinct
            out.append([values[i] for i in rng.permutation(len(values))[: min(k, len(values))]])
        else:
            out.append([values[int(i)] for i in rng.integers(0, len(values), size=k)])
    return out


def output_ids(model: Any, seqs: list[list[Hashable]]) -> list[list[int | float | None]]:
    """The exact targets of ``seqs`` as output ids (numbers for numerical programs)."""
    target = target_function(model)
    space = model.codec.output_vocab
    index = None if space is None else {v: i for i, v in enumerate(space)}
    return [
        [None if v is None else (float(v) if index is None else index[v]) for v in target(s)]
        for s in seqs
    ]
