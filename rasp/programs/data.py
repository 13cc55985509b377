"""Training data of a Transformer Program: the task protocol, the vocabulary and the splits.

``fit_program`` reads a task through ``ProgramTask``, a small protocol that the models layer's
``models.tasks.Task`` satisfies (and the paper-setting adapters in ``models.programs``), so
``rasp`` never imports the layer above it. A target of ``None`` marks a position that is not
scored (the paper's ``<pad>`` targets: the EOS of sort/reverse, numbers in induction).

Example:
    >>> vocab = ProgramVocab(("a", "b"), ("x", "y"), n_ctx=4)
    >>> vocab.encode(["b", "a"])
    [0, 2, 1]
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from rasp.errors import ProgramDataError

#: The id of BOS; every program input starts with it.
BOS_ID = 0
BOS = "BOS"
#: Target id of an unscored position (``None`` target or padding).
IGNORE = -100


class ProgramTask(Protocol):
    """What ``fit_program`` needs from a task (``models.tasks.Task`` has all of it)."""

    @property
    def name(self) -> str: ...

    @property
    def input_values(self) -> tuple[Hashable, ...]: ...

    @property
    def output_values(self) -> tuple[Hashable, ...]: ...

    @property
    def max_len(self) -> int: ...

    @property
    def causal(self) -> bool: ...

    def target(self, seq: Sequence[Hashable]) -> list: ...

    def sample(self, n: int, rng: np.random.Generator) -> list[list[Hashable]]: ...


@dataclass(frozen=True)
class ProgramVocab:
    """Token ids and output classes of a program.

    Attributes:
        input_values: the input values; value ``input_values[i]`` has id ``i + 1`` (BOS is 0).
        output_values: the value of each output class.
        n_ctx: positions including BOS (``max_len + 1``).
    """

    input_values: tuple[Hashable, ...]
    output_values: tuple[Hashable, ...]
    n_ctx: int

    @property
    def n_tokens(self) -> int:
        """Input ids including BOS."""
        return len(self.input_values) + 1

    @property
    def d_var(self) -> int:
        """Values of every categorical variable: enough for the tokens and the positions."""
        return max(self.n_tokens, self.n_ctx)

    @property
    def token_labels(self) -> tuple[Hashable, ...]:
        """The value of each token id (``BOS`` first)."""
        return (BOS, *self.input_values)

    def encode(self, seq: Sequence[Hashable]) -> list[int]:
        """Ids of ``[BOS, *seq]``.

        Raises:
            ProgramDataError: for a sequence too long or a value outside ``input_values``.
        """
        if len(seq) + 1 > self.n_ctx:
            raise ProgramDataError(
                f"input has {len(seq)} tokens; this program takes at most {self.n_ctx - 1}"
            )
        index = {v: i + 1 for i, v in enumerate(self.input_values)}
        try:
            return [BOS_ID, *(index[v] for v in seq)]
        except KeyError as err:
            raise ProgramDataError(
                f"token {err.args[0]!r} is not an input value; valid: "
                f"{', '.join(map(repr, self.input_values))}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "input_values": list(self.input_values),
            "output_values": list(self.output_values),
            "n_ctx": self.n_ctx,
        }


def vocab_of(task: ProgramTask) -> ProgramVocab:
    """The vocabulary of a task.

    Raises:
        ProgramDataError: for repeated values, ``BOS`` among the inputs or no outputs.
    """
    values, outputs = tuple(task.input_values), tuple(task.output_values)
    if not values or len(set(values)) != len(values) or BOS in values:
        raise ProgramDataError(
            f"task {task.name!r}: input_values must be distinct, non-empty and exclude {BOS!r}; "
            f"got {values!r}"
        )
    if not outputs or len(set(outputs)) != len(outputs):
        raise ProgramDataError(
            f"task {task.name!r}: output_values must be distinct and non-empty, got {outputs!r}"
        )
    if isinstance(task.max_len, bool) or not isinstance(task.max_len, int) or task.max_len < 1:
        raise ProgramDataError(f"task {task.name!r}: max_len must be an int >= 1")
    return ProgramVocab(values, outputs, task.max_len + 1)


@dataclass(frozen=True)
class Split:
    """Encoded examples: ``tokens``/``targets`` are ``[n, n_ctx]`` (targets ``IGNORE`` off-score)."""

    sequences: tuple[tuple[Hashable, ...], ...]
    tokens: torch.Tensor
    valid: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.sequences)


@dataclass(frozen=True)
class ProgramData:
    """Train, validation and test splits of unique sequences (81/9/10, as the authors split)."""

    vocab: ProgramVocab
    train: Split
    val: Split
    test: Split


def make_data(task: ProgramTask, size: int, seed: int) -> ProgramData:
    """Draw up to ``size`` unique sequences from ``task`` and split them.

    Sequences are drawn with ``task.sample`` from a generator seeded with ``seed``; when the
    task has fewer distinct inputs than ``size``, all that were found after ``5 * size`` draws
    are used (the authors' ``unique`` rule).

    Raises:
        ProgramDataError: when fewer than 10 distinct sequences come out, or a target is
            outside ``output_values`` or of the wrong length.
    """
    vocab = vocab_of(task)
    rng = np.random.default_rng([seed, 7])
    seen: dict[tuple, None] = {}
    draws = 0
    while len(seen) < size and draws < 5 * size:
        batch = task.sample(min(size, 5 * size - draws), rng)
        draws += len(batch)
        for seq in batch:
            seen.setdefault(tuple(seq), None)
            if len(seen) == size:
                break
    seqs = list(seen)
    if len(seqs) < 10:
        raise ProgramDataError(f"task {task.name!r} gave only {len(seqs)} distinct sequences")
    order = np.random.default_rng([seed, 8]).permutation(len(seqs))
    seqs = [seqs[i] for i in order]
    n_test = len(seqs) // 10
    n_val = (len(seqs) - n_test) // 10
    parts = seqs[:n_test], seqs[n_test : n_test + n_val], seqs[n_test + n_val :]
    test, val, train = (encode_split(task, vocab, p) for p in parts)
    return ProgramData(vocab, train, val, test)


def encode_split(task: ProgramTask, vocab: ProgramVocab, seqs: Sequence[Sequence]) -> Split:
    """Encode sequences and their targets, right-padded to ``n_ctx``."""
    out_index = {v: i for i, v in enumerate(vocab.output_values)}
    n, t = len(seqs), vocab.n_ctx
    tokens = torch.zeros((n, t), dtype=torch.long)
    valid = torch.zeros((n, t), dtype=torch.bool)
    targets = torch.full((n, t), IGNORE, dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids = vocab.encode(seq)
        tokens[row, : len(ids)] = torch.tensor(ids)
        valid[row, : len(ids)] = True
        target = task.target(list(seq))
        if len(target) != len(seq):
            raise ProgramDataError(
                f"task {task.name!r}: target has {len(target)} values for {len(seq)} tokens"
            )
        for pos, value in enumerate(target):
            if value is None:
                continue
            if value not in out_index:
                raise ProgramDataError(
                    f"task {task.name!r}: target {value!r} is not an output value; valid: "
                    f"{', '.join(map(repr, vocab.output_values))}"
                )
            targets[row, pos + 1] = out_index[value]
    return Split(tuple(tuple(s) for s in seqs), tokens, valid, targets)
