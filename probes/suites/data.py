"""Datasets the suites share: task inputs with exact targets, and text with its next tokens.

Task models and Transformer Programs draw inputs with their task's sampler and label them
with the task's target function; compiled RASP models draw random inputs from their vocabulary and label them with
the RASP interpreter; text models read chunks of the shipped corpus (next-token targets).
Everything is seeded, so the same options give the same inputs (and the same cell key).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from analysis.gating_data import GatingData, next_token_data, task_data
from probes.errors import SuiteNotApplicable


def target_function(model: Any) -> Callable[[list], list]:
    """The exact per-position target function of a task, Transformer Program or library RASP
    model (``None`` where a position is not scored).

    Raises:
        SuiteNotApplicable: for a model with no known target function.
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
            raise SuiteNotApplicable(
                f"{model.name!r} is not a library RASP program, so its targets are unknown; "
                f"library: {', '.join(sorted(LIBRARY))}"
            )
        program = entry.build()
        return lambda seq: evaluate(program, seq)
    raise SuiteNotApplicable(f"{model.name!r} ({model.kind}) has no task targets")


def sample_inputs(model: Any, n: int, seed: int) -> list[list[Hashable]]:
    """``n`` seeded random inputs of a task-vocabulary model (any length it accepts)."""
    rng = np.random.default_rng(seed)
    if model.kind == "task":
        from models.tasks import get_task

        return get_task(model.provenance.get("task", model.spec.name)).sample(n, rng)
    if model.kind == "program":
        from models.program_tasks import program_task

        return program_task(model.spec.name).sample(n, rng)
    values = list(model.codec.vocab[1:])
    out = []
    for _ in range(n):
        k = int(rng.integers(1, model.codec.max_len + 1))
        if model.spec.name == "sort_unique":  # its keys must be distinct
            out.append([values[i] for i in rng.permutation(len(values))[: min(k, len(values))]])
        else:
            out.append([values[int(i)] for i in rng.integers(0, len(values), size=k)])
    return out


def codec_dataset(model: Any, n: int, seed: int, name: str) -> GatingData:
    """Random inputs of a task/RASP model and their exact targets as ``GatingData``."""
    target = target_function(model)
    seqs = sample_inputs(model, n, seed)
    space = model.codec.output_vocab
    index = None if space is None else {v: i for i, v in enumerate(space)}
    outs = [
        [None if v is None else (float(v) if index is None else index[v]) for v in target(s)]
        for s in seqs
    ]
    return task_data(model, seqs, outs, name=name)


def text_dataset(model: Any, n: int, max_len: int, seed: int, name: str) -> GatingData:
    """``n`` seeded chunks of the shipped corpus, next-token targets, cut to ``max_len`` tokens."""
    from models.corpus import load_corpus

    chunks = load_corpus()
    texts = random.Random(seed).sample(chunks, min(n, len(chunks)))
    return next_token_data(model, texts, max_len=max_len, name=name)


def model_dataset(model: Any, n_codec: int, n_text: int, max_len: int, seed: int) -> GatingData:
    """The natural dataset of any model: task/RASP targets, or next tokens of the corpus."""
    if model.codec is not None:
        return codec_dataset(model, n_codec, seed, f"{n_codec} random inputs of {model.name}")
    return text_dataset(
        model, n_text, max_len, seed, f"{n_text} corpus chunks, <= {max_len} tokens"
    )


def describe(data: GatingData) -> str:
    """One line: rows, lengths, supervised positions."""
    lo, hi = int(data.lengths.min()), int(data.lengths.max())
    return (
        f"{data.name}: {len(data)} rows of {lo}..{hi} tokens, "
        f"{data.n_supervised} supervised positions"
    )
