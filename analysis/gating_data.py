"""``GatingData``: the sequences and supervised targets head gating is fitted on.

A dataset is a padded ``[n, pos]`` token tensor with one target per position (a class id in
the model's *output* space, ``-100`` where a position is not supervised) and each row's real
length. Batches are always cut from rows of one length, so padding never enters a forward
pass and cannot change a bidirectional model's activations.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from analysis.errors import OptionError
from analysis.head_scores import HeadScoreOptions, repeated_random_tokens
from analysis.protocol import hooked_module

#: Target value of a position that is not supervised (PyTorch's ``ignore_index``).
IGNORE = -100


@dataclass(frozen=True)
class GatingData:
    """Token sequences and their per-position targets.

    Attributes:
        tokens: ``[n, pos]`` input ids, right-padded with id 0 past each row's length.
        targets: ``[n, pos]`` class ids in the model's output space (the target of the
            prediction made *at* that position), ``-100`` where not supervised.
        lengths: ``[n]`` real length of each row.
        loss_mask: ``[n, pos]`` the supervised positions.
        numerical_targets: ``[n, pos]`` values for models whose output is one number
            (compiled numerical programs), else ``None``; the loss is then squared error.
        name: a display name.

    Example:
        >>> data = from_token_batch(torch.tensor([[0, 3, 1]]), torch.tensor([[-100, 2, 0]]))
        >>> data.n_supervised
        2
    """

    tokens: Int[Tensor, "n pos"]
    targets: Int[Tensor, "n pos"]
    lengths: Int[Tensor, " n"]
    loss_mask: Bool[Tensor, "n pos"]
    numerical_targets: Float[Tensor, "n pos"] | None = None
    name: str = "data"

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_supervised(self) -> int:
        """How many positions carry a target."""
        return int(self.loss_mask.sum())

    @property
    def is_numerical(self) -> bool:
        """Whether the targets are numbers (squared-error loss) rather than classes."""
        return self.numerical_targets is not None

    def length_groups(self) -> dict[int, Tensor]:
        """Row indices by real length; every batch is cut from one group."""
        groups: dict[int, Tensor] = {}
        for length in sorted(set(self.lengths.tolist())):
            groups[length] = torch.nonzero(self.lengths == length).flatten()
        return groups

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor | None]]:
        """Every row once, as ``(tokens, targets, mask, numerical)`` of one length each."""
        for length, rows in self.length_groups().items():
            for start in range(0, len(rows), batch_size):
                yield self.rows(rows[start : start + batch_size], length)

    def rows(self, rows: Tensor, length: int) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """``(tokens, targets, mask, numerical)`` of ``rows``, cut to ``length`` positions."""
        num = None if self.numerical_targets is None else self.numerical_targets[rows, :length]
        return (
            self.tokens[rows, :length],
            self.targets[rows, :length],
            self.loss_mask[rows, :length],
            num,
        )


def from_token_batch(
    tokens: Tensor,
    targets: Tensor,
    mask: Tensor | None = None,
    *,
    lengths: Tensor | None = None,
    numerical_targets: Tensor | None = None,
    name: str = "data",
) -> GatingData:
    """A dataset from ready-made tensors.

    Args:
        tokens: ``[n, pos]`` input ids.
        targets: ``[n, pos]`` output class ids, ``-100`` where not supervised (for numerical
            data pass zeros here and the values in ``numerical_targets``).
        mask: ``[n, pos]`` supervised positions; defaults to ``targets != -100``.
        lengths: ``[n]`` real row lengths (default: all ``pos``).
        numerical_targets: ``[n, pos]`` float targets of a numerical-output model.
        name: display name.

    Raises:
        OptionError: empty data, shapes that disagree, negative ids or no supervised position.

    Example:
        >>> from_token_batch(torch.tensor([[0, 1]]), torch.tensor([[1, 0]])).n_supervised
        2
    """
    tokens = torch.as_tensor(tokens)
    if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise OptionError(
            f"tokens must be a non-empty [n, pos] tensor, got shape {tuple(tokens.shape)}"
        )
    targets = torch.as_tensor(targets)
    if targets.shape != tokens.shape:
        raise OptionError(
            f"targets have shape {tuple(targets.shape)} but tokens have {tuple(tokens.shape)}; "
            "give one target per token position"
        )
    if tokens.dtype.is_floating_point or targets.dtype.is_floating_point:
        raise OptionError(
            "tokens and targets must be integer ids; pass numbers as numerical_targets"
        )
    if int(tokens.min()) < 0:
        raise OptionError(f"token ids must be >= 0, found {int(tokens.min())}")
    bad = targets[(targets != IGNORE) & (targets < 0)]
    if bad.numel():
        raise OptionError(
            f"target ids must be >= 0 or {IGNORE} (unsupervised), found {int(bad[0])}"
        )
    n, pos = tokens.shape
    lengths = torch.full((n,), pos) if lengths is None else torch.as_tensor(lengths).long()
    if lengths.shape != (n,) or int(lengths.min()) < 1 or int(lengths.max()) > pos:
        raise OptionError(
            f"lengths must be [n] = [{n}] values in 1..{pos}, got {lengths.tolist()[:8]}"
        )
    in_row = torch.arange(pos)[None, :] < lengths[:, None]
    mask = (targets != IGNORE) if mask is None else torch.as_tensor(mask).bool()
    if mask.shape != tokens.shape:
        raise OptionError(
            f"mask has shape {tuple(mask.shape)} but tokens have {tuple(tokens.shape)}"
        )
    num = None
    if numerical_targets is not None:
        num = torch.as_tensor(numerical_targets).float()
        if num.shape != tokens.shape:
            raise OptionError(
                f"numerical_targets have shape {tuple(num.shape)} but tokens have {tuple(tokens.shape)}"
            )
    else:
        mask = mask & (targets != IGNORE)
    mask = mask & in_row
    if not bool(mask.any()):
        raise OptionError("no supervised position: every target is -100 or masked out")
    targets = torch.where(mask, targets, torch.full_like(targets, IGNORE)).long()
    return GatingData(tokens.long(), targets, lengths, mask, num, name)


def task_data(
    model: Any,
    sequences: Sequence[Sequence[Hashable]],
    outputs: Sequence[Sequence[int | float | None]],
    *,
    name: str = "task data",
) -> GatingData:
    """A dataset for a task-vocabulary model (``model.codec``) from inputs and output ids.

    Args:
        model: a model with a ``codec`` whose ``encode`` puts BOS in front.
        sequences: input values (no BOS), any lengths.
        outputs: one entry per input position: an output class id, ``None`` for "not
            supervised", or a float for a numerical-output model (``codec.output_vocab`` is
            ``None``). Position ``i`` of the sequence is model position ``i + 1``.
        name: display name.

    Raises:
        OptionError: no sequences, or an output list whose length differs from its input.

    Example:
        >>> data = task_data(lm, [[3, 1, 2]], [[0, 1, 2]])   # doctest: +SKIP
    """
    codec = getattr(model, "codec", None)
    if codec is None:
        raise OptionError("task_data needs a task-vocabulary model (one with a codec)")
    if not sequences:
        raise OptionError("no sequences: give at least one input")
    numerical = codec.output_vocab is None
    rows = [codec.encode(seq) for seq in sequences]
    pos = max(len(r) for r in rows)
    tokens = torch.zeros(len(rows), pos, dtype=torch.long)
    targets = torch.full((len(rows), pos), IGNORE, dtype=torch.long)
    values = torch.zeros(len(rows), pos)
    mask = torch.zeros(len(rows), pos, dtype=torch.bool)
    for i, (row, out) in enumerate(zip(rows, outputs, strict=True)):
        if len(out) != len(row) - 1:
            raise OptionError(
                f"sequence {i} has {len(row) - 1} tokens but {len(out)} outputs; give one per token"
            )
        tokens[i, : len(row)] = torch.tensor(row)
        for p, value in enumerate(out, start=1):
            if value is None:
                continue
            mask[i, p] = True
            if numerical:
                values[i, p] = float(value)
            else:
                targets[i, p] = int(value)
    lengths = torch.tensor([len(r) for r in rows])
    if numerical:
        return from_token_batch(
            tokens,
            torch.zeros_like(tokens),
            mask,
            lengths=lengths,
            numerical_targets=values,
            name=name,
        )
    return from_token_batch(tokens, targets, mask, lengths=lengths, name=name)


def next_token_data(
    model: Any, texts: Sequence[str], *, max_len: int = 64, name: str = "next-token data"
) -> GatingData:
    """Language-model data: each position's target is the next token of the text.

    Texts are tokenised with BOS and cut to ``max_len`` tokens; the last position of each row
    has no target. Rows of different lengths are only ever batched by length.

    Raises:
        OptionError: no texts, ``max_len`` < 2, or a text shorter than two tokens.

    Example:
        >>> data = next_token_data(lm, ["The cat sat on the mat."], max_len=16)  # doctest: +SKIP
    """
    if not texts:
        raise OptionError("no texts: give at least one")
    if max_len < 2:
        raise OptionError(f"max_len must be >= 2 (a token and its successor), got {max_len}")
    inner = hooked_module(model)
    rows = []
    for i, text in enumerate(texts):
        ids = inner.to_tokens(text, prepend_bos=True, truncate=False)[0][:max_len]
        if len(ids) < 2:
            raise OptionError(f"text {i} ({text[:30]!r}) is shorter than two tokens")
        rows.append(ids)
    pos = max(len(r) for r in rows)
    tokens = torch.zeros(len(rows), pos, dtype=torch.long)
    targets = torch.full((len(rows), pos), IGNORE, dtype=torch.long)
    for i, ids in enumerate(rows):
        tokens[i, : len(ids)] = ids
        targets[i, : len(ids) - 1] = ids[1:]
    lengths = torch.tensor([len(r) for r in rows])
    return from_token_batch(tokens, targets, lengths=lengths, name=name)


def induction_data(
    model: Any,
    n: int,
    *,
    half_length: int | None = None,
    seed: int = 0,
    name: str = "repeated random tokens",
) -> GatingData:
    """Induction data: rows ``[BOS, x, x]`` of random tokens ``x`` (those of the head scores,
    ``analysis.head_scores.repeated_random_tokens``), scored only where the next token is
    predictable by copying: every position of the second ``x`` but its last.

    Args:
        model: a hooked model (text models draw ids from 100 up, task models any non-BOS id).
        n: rows.
        half_length: length of ``x`` (default: as long as the context allows, at most 32).
        seed: seed of the draw.
        name: the dataset's name.

    Raises:
        OptionError: ``n`` < 1, or a ``half_length`` that does not fit the context twice.

    Example:
        >>> data = induction_data(lm, 8, half_length=12)                 # doctest: +SKIP
        >>> data.tokens.shape, int(data.loss_mask.sum())                  # doctest: +SKIP
        (torch.Size([8, 25]), 88)
    """
    if n < 1:
        raise OptionError(f"the row count must be at least 1, got {n}")
    options = HeadScoreOptions(n_sequences=n, half_length=half_length, seed=seed)
    tokens, half = repeated_random_tokens(model, options)
    targets = torch.full_like(tokens, IGNORE)
    # Position half + i (i >= 1) holds x[i-1] of the second copy; its successor x[i] followed
    # x[i-1] in the first copy. The first copy's last position cannot know x[0].
    targets[:, half + 1 : -1] = tokens[:, half + 2 :]
    return from_token_batch(tokens, targets, name=name)
