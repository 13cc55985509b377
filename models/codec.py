"""Token codecs for models with a small task vocabulary (task, rasp and program models)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from models.errors import InputError

BOS = "BOS"


@dataclass(frozen=True)
class TaskCodec:
    """Maps a sequence of task values to model ids, with a BOS token in front.

    Attributes:
        vocab: the input values; a value's id is its index. ``vocab[0]`` is the BOS token.
        max_len: the longest input (not counting BOS) the model accepts.
        output_vocab: the values the model's output classes stand for (index = class id), or
            ``None`` when the output is numerical.

    Example:
        >>> codec = TaskCodec(vocab=("BOS", 0, 1, 2), max_len=4, output_vocab=(0, 1, 2))
        >>> codec.encode([2, 0])
        [0, 3, 1]
    """

    vocab: tuple[Hashable, ...]
    max_len: int
    output_vocab: tuple[Hashable, ...] | None

    def __post_init__(self) -> None:
        if not self.vocab or self.vocab[0] != BOS:
            raise ValueError(f"a codec's vocab must start with {BOS!r}, got {self.vocab[:3]!r}")

    @property
    def input_values(self) -> tuple[Hashable, ...]:
        """The input values a user may give (the vocabulary without BOS)."""
        return self.vocab[1:]

    def parse_value(self, text: str) -> Hashable:
        """Read one value typed by a user (``'3'`` -> ``3`` when the vocabulary holds ints)."""
        for value in self.input_values:
            if str(value) == text.strip():
                return value
        raise InputError(
            f"token {text!r} is not in the vocabulary; valid: {', '.join(map(str, self.input_values))}"
        )

    def encode(self, sequence: Sequence[Hashable]) -> list[int]:
        """Ids of ``[BOS, *sequence]``.

        Raises:
            InputError: for an empty sequence, one longer than ``max_len`` or an unknown value.
        """
        seq = list(sequence)
        if not seq:
            raise InputError("empty input: give at least one token")
        if len(seq) > self.max_len:
            raise InputError(
                f"input has {len(seq)} tokens; this model takes at most {self.max_len}"
            )
        index = {value: i for i, value in enumerate(self.vocab)}
        ids = [0]
        for pos, value in enumerate(seq):
            if value == BOS or value not in index:
                raise InputError(
                    f"token {value!r} at position {pos} is not in the vocabulary; valid: "
                    f"{', '.join(map(repr, self.input_values))}"
                )
            ids.append(index[value])
        return ids

    def to_tokens(self, sequences: Sequence[Sequence[Hashable]]) -> torch.Tensor:
        """A ``[batch, 1 + len]`` id tensor; all sequences must have the same length."""
        rows = [self.encode(s) for s in sequences]
        if len({len(r) for r in rows}) > 1:
            raise InputError("sequences in one batch must have the same length")
        return torch.tensor(rows, dtype=torch.long)

    def to_str_tokens(self, sequence: Sequence[Hashable]) -> list[str]:
        """String labels of ``[BOS, *sequence]``."""
        self.encode(sequence)
        return [BOS, *(str(v) for v in sequence)]
