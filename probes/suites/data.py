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

from analysis.gating_data import GatingData, next_token_data, task_data
from models import targets
from probes.errors import SuiteNotApplicable


def target_function(model: Any) -> Callable[[list], list]:
    """``models.targets.target_function``, as ``SuiteNotApplicable`` when there is none."""
    try:
        return targets.target_function(model)
    except targets.NoTargetsError as exc:
        raise SuiteNotApplicable(str(exc)) from exc


def sample_inputs(model: Any, n: int, seed: int) -> list[list[Hashable]]:
    """``n`` seeded random inputs of a task-vocabulary model (any length it accepts)."""
    return targets.sample_inputs(model, n, seed)


def codec_dataset(model: Any, n: int, seed: int, name: str) -> GatingData:
    """Random inputs of a task/RASP model and their exact targets as ``GatingData``."""
    target_function(model)  # not applicable -> SuiteNotApplicable
    seqs = sample_inputs(model, n, seed)
    return task_data(model, seqs, targets.output_ids(model, seqs), name=name)


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
