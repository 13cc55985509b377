"""Algorithmic tasks of "Learning Transformer Programs" (Friedman et al., 2023), plus induction.

Each ``Task`` holds an exact target function (one output per input position, as the paper's
``data_utils.py`` defines it), a seeded sampler, the codec of its model and the default model
and training settings that reach the accuracies ``bench/task_models.py`` reports.

Example:
    >>> task = get_task("sort")
    >>> task.target([3, 1, 2])
    [1, 2, 3]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.codec import BOS, TaskCodec
from models.errors import InputError, UnknownModelError
from models.training import ModelConfig, TrainConfig

#: Output of ``most_freq`` past the last distinct token.
PAD = "-"
#: Output of ``induction`` where the current token has not been seen before.
UNSEEN = "?"

_DIGITS = tuple(range(8))
_COUNTS = tuple(range(1, 9))

Sampler = Callable[[np.random.Generator, int], list]


@dataclass(frozen=True)
class Task:
    """One algorithmic task: what the model reads, what it must output, and how it is trained.

    Attributes:
        name: registry key (``task:<name>`` loads its model).
        description: one sentence for the dashboard.
        input_values: the input vocabulary, without BOS.
        output_values: the values the model's output classes stand for (index = class id).
        max_len: the longest input.
        causal: causal attention (outputs depend on the prefix only) instead of bidirectional.
        lengths: the input lengths ``sample`` draws from when no length is given.
        target_fn: the exact, pure target function; use ``target`` (it validates the input).
        sampler: draws one input of a given length.
        model_config: the default architecture.
        train_config: the default training settings.

    Example:
        >>> get_task("hist").target([1, 2, 1])
        [2, 1, 2]
    """

    name: str
    description: str
    input_values: tuple[Hashable, ...]
    output_values: tuple[Hashable, ...]
    max_len: int
    causal: bool
    lengths: tuple[int, ...]
    target_fn: Callable[[Sequence[Hashable]], list] = field(repr=False)
    sampler: Sampler = field(repr=False)
    model_config: ModelConfig = field(default_factory=ModelConfig)
    train_config: TrainConfig = field(default_factory=TrainConfig)

    def target(self, seq: Sequence[Hashable]) -> list:
        """The correct output for every position of ``seq``.

        Raises:
            InputError: for an empty or too long input, or a value outside ``input_values``.
        """
        self.codec().encode(seq)
        return self.target_fn(list(seq))

    def sample(
        self, n: int, rng: np.random.Generator, length: int | None = None
    ) -> list[list[Hashable]]:
        """``n`` inputs drawn with ``rng``; every one of ``length`` tokens when given.

        Raises:
            InputError: for a length outside ``1..max_len``.
        """
        if length is not None and not 1 <= length <= self.max_len:
            raise InputError(f"length {length} is outside 1..{self.max_len} for task {self.name!r}")
        lens = [length] * n if length else rng.choice(self.lengths, size=n).tolist()
        return [self.sampler(rng, int(ln)) for ln in lens]

    def codec(self) -> TaskCodec:
        """The codec of this task's model: ``[BOS, *input_values]`` in, ``output_values`` out."""
        return TaskCodec((BOS, *self.input_values), self.max_len, self.output_values)


# -- target functions ------------------------------------------------------------------------
def _reverse(seq: list) -> list:
    return seq[::-1]


def _sort(seq: list) -> list:
    return sorted(seq)


def _hist(seq: list) -> list:
    counts = Counter(seq)
    return [counts[t] for t in seq]


def _double_hist(seq: list) -> list:
    counts = Counter(seq)
    same_count = Counter(counts.values())
    return [same_count[counts[t]] for t in seq]


def _most_freq(seq: list) -> list:
    counts = Counter(seq)
    # Counter keeps first-insertion order, so a stable sort breaks ties by first position.
    ranked = sorted(counts, key=lambda t: -counts[t])
    return ranked + [PAD] * (len(seq) - len(ranked))


def _dyck_tags(seq: list) -> list:
    """T: balanced so far; P: a valid prefix, not balanced; F: no longer valid, F ever after."""
    opener = {")": "(", "}": "{"}
    stack: list = []
    tags: list = []
    for tok in seq:
        if tok in opener:
            if not stack or stack[-1] != opener[tok]:
                return tags + ["F"] * (len(seq) - len(tags))
            stack.pop()
        else:
            stack.append(tok)
        tags.append("P" if stack else "T")
    return tags


def _induction(seq: list) -> list:
    """The token that followed the latest earlier occurrence of this token, else ``UNSEEN``."""
    after: dict = {}
    out = []
    for i, tok in enumerate(seq):
        if i > 0:
            # The follower of an occurrence may be the current token itself ("5 5" -> 5).
            after[seq[i - 1]] = tok
        out.append(after.get(tok, UNSEEN))
    return out


# -- samplers --------------------------------------------------------------------------------
def _uniform(values: tuple) -> Sampler:
    def draw(rng: np.random.Generator, length: int) -> list:
        return [values[i] for i in rng.integers(0, len(values), size=length)]

    return draw


def _dyck_sampler(pairs: tuple[tuple[str, str], ...]) -> Sampler:
    symbols = tuple(s for pair in pairs for s in pair)

    def draw(rng: np.random.Generator, length: int) -> list:
        if length < 2 or rng.random() < 0.5:
            return _uniform(symbols)(rng, length)
        n_pairs = int(rng.integers(1, length // 2 + 1))
        balanced: list = []
        stack: list = []
        opens_left = n_pairs
        while opens_left or stack:
            if opens_left and (not stack or rng.random() < 0.5):
                pair = pairs[int(rng.integers(len(pairs)))]
                balanced.append(pair[0])
                stack.append(pair[1])
                opens_left -= 1
            else:
                balanced.append(stack.pop())
        return balanced + _uniform(symbols)(rng, length - len(balanced))

    return draw


def _induction_sampler(values: tuple) -> Sampler:
    def draw(rng: np.random.Generator, length: int) -> list:
        period = int(rng.integers(1, min(length, len(values)) + 1))
        prefix = [values[i] for i in rng.permutation(len(values))[:period]]
        return [prefix[i % period] for i in range(length)]

    return draw


# -- the registry ----------------------------------------------------------------------------
def _per_position(name: str, description: str, target_fn: Callable, outputs: tuple, **kw) -> Task:
    return Task(
        name=name,
        description=description,
        input_values=_DIGITS,
        output_values=outputs,
        max_len=8,
        causal=False,
        lengths=tuple(range(1, 9)),
        target_fn=target_fn,
        sampler=_uniform(_DIGITS),
        **kw,
    )


def _dyck(name: str, pairs: tuple[tuple[str, str], ...], **kw) -> Task:
    kinds = " and ".join(a + b for a, b in pairs)
    return Task(
        name=name,
        description=f"tag each prefix of a {kinds} string: T balanced, P valid prefix, F invalid",
        input_values=tuple(s for pair in pairs for s in pair),
        output_values=("T", "P", "F"),
        max_len=16,
        # Tags depend on the prefix only, so a causal model trained at full length also
        # handles every shorter input.
        causal=True,
        lengths=(16,),
        target_fn=_dyck_tags,
        sampler=_dyck_sampler(pairs),
        **kw,
    )


_INDUCTION_VALUES = tuple(range(10))

_TASK_LIST = (
    _per_position(
        "reverse",
        "output the input reversed",
        _reverse,
        _DIGITS,
        model_config=ModelConfig(n_layers=2, n_heads=2, d_model=64, d_head=32, d_mlp=128),
        train_config=TrainConfig(steps=2000),
    ),
    _per_position(
        "sort",
        "output the input sorted in ascending order",
        _sort,
        _DIGITS,
        model_config=ModelConfig(n_layers=2, n_heads=2, d_model=64, d_head=32, d_mlp=128),
        train_config=TrainConfig(steps=2000, lr=5e-3),
    ),
    _per_position(
        "hist",
        "at each position, how often its token occurs in the input",
        _hist,
        _COUNTS,
        model_config=ModelConfig(n_layers=1, n_heads=1, d_model=64, d_head=32, d_mlp=128),
        train_config=TrainConfig(steps=3000),
    ),
    _per_position(
        "double_hist",
        "at each position, how many distinct tokens occur as often as its token",
        _double_hist,
        _COUNTS,
        model_config=ModelConfig(n_layers=2, n_heads=2, d_model=64, d_head=32, d_mlp=128),
        train_config=TrainConfig(steps=1800, lr=5e-3),
    ),
    _per_position(
        "most_freq",
        "the distinct tokens by falling frequency (ties: first seen first), then '-'",
        _most_freq,
        (*_DIGITS, PAD),
        model_config=ModelConfig(n_layers=3, n_heads=2, d_model=64, d_head=32, d_mlp=128),
        train_config=TrainConfig(steps=1500),
    ),
    _dyck(
        "dyck1",
        (("(", ")"),),
        model_config=ModelConfig(n_layers=2, n_heads=2, d_model=64, d_head=32, d_mlp=128),
        train_config=TrainConfig(steps=1000),
    ),
    _dyck(
        "dyck2",
        (("(", ")"), ("{", "}")),
        model_config=ModelConfig(n_layers=2, n_heads=2, d_model=64, d_head=32, d_mlp=128),
        train_config=TrainConfig(steps=900),
    ),
    Task(
        name="induction",
        description="predict the next token by copying what followed this token's last occurrence",
        input_values=_INDUCTION_VALUES,
        output_values=(*_INDUCTION_VALUES, UNSEEN),
        max_len=16,
        causal=True,
        lengths=tuple(range(1, 17)),
        target_fn=_induction,
        sampler=_induction_sampler(_INDUCTION_VALUES),
        model_config=ModelConfig(
            n_layers=2, n_heads=1, d_model=64, d_head=32, d_mlp=None, attn_only=True
        ),
        train_config=TrainConfig(steps=1000),
    ),
)

#: Every built-in task by name.
TASKS: dict[str, Task] = {task.name: task for task in _TASK_LIST}


def get_task(name: str) -> Task:
    """The built-in task called ``name``.

    Raises:
        UnknownModelError: when no task has that name; the message lists the valid names.

    Example:
        >>> get_task("reverse").target([1, 2, 3])
        [3, 2, 1]
    """
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownModelError(f"unknown task {name!r}; valid: {', '.join(TASKS)}") from None
