"""Settings of a Transformer Program: its architecture and how it is fitted.

Defaults follow the authors' ``scripts/rasp.sh`` (Friedman, Wettig, Chen 2023): Adam at 5e-2,
batch 512, 250 epochs over 20,000 unique examples, Gumbel-softmax temperature annealed
geometrically from 3.0 to 0.01, MLPs reading 2 variables with 64 hidden units.

Example:
    >>> ProgramArchitecture(n_layers=1, n_heads_cat=2, n_heads_num=2).heads_per_layer
    4
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rasp.errors import ProgramConfigError


@dataclass(frozen=True)
class ProgramArchitecture:
    """Shape of a Transformer Program (per layer counts, as in the paper's Table 1).

    Attributes:
        n_layers: blocks of attention then MLPs.
        n_heads_cat: categorical heads per layer (hard attention, copy a categorical variable).
        n_heads_num: numerical heads per layer (count the matching keys: RASP selector width).
        n_mlps_cat: MLPs per layer reading 2 categorical variables.
        n_mlps_num: MLPs per layer reading 2 numerical variables.
        d_mlp: hidden units of every MLP.

    Example:
        >>> ProgramArchitecture(n_layers=3, n_heads_cat=4, n_heads_num=4).heads_per_layer
        8
    """

    n_layers: int = 1
    n_heads_cat: int = 1
    n_heads_num: int = 0
    n_mlps_cat: int = 0
    n_mlps_num: int = 0
    d_mlp: int = 64

    def __post_init__(self) -> None:
        _int_at_least(self, "n_layers", 1)
        for name in ("n_heads_cat", "n_heads_num", "n_mlps_cat", "n_mlps_num"):
            _int_at_least(self, name, 0)
        _int_at_least(self, "d_mlp", 1)
        if self.n_heads_cat + self.n_heads_num == 0:
            raise ProgramConfigError(
                "a Transformer Program needs at least one head per layer; "
                "got n_heads_cat=0 and n_heads_num=0"
            )

    @property
    def heads_per_layer(self) -> int:
        """Categorical plus numerical heads in one layer."""
        return self.n_heads_cat + self.n_heads_num

    @property
    def mlps_per_layer(self) -> int:
        """Categorical plus numerical MLPs in one layer."""
        return self.n_mlps_cat + self.n_mlps_num

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


@dataclass(frozen=True)
class FitConfig:
    """How ``fit_program`` trains a program.

    Attributes:
        architecture: the program's shape.
        epochs: passes over the training split.
        batch_size: sequences per step.
        lr: Adam learning rate.
        tau_init: Gumbel-softmax temperature at the first step.
        tau_end: temperature at the last step (geometric schedule in between, per step).
        dataset_size: unique examples drawn, split 81/9/10 into train/validation/test.
        seed: seeds the data, the initial weights and the Gumbel noise.
        eval_every: epochs between validation checks of the discretised program.

    Example:
        >>> FitConfig(epochs=10).tau_end
        0.01
    """

    architecture: ProgramArchitecture = field(default_factory=ProgramArchitecture)
    epochs: int = 250
    batch_size: int = 512
    lr: float = 5e-2
    tau_init: float = 3.0
    tau_end: float = 0.01
    dataset_size: int = 20_000
    seed: int = 0
    eval_every: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.architecture, ProgramArchitecture):
            raise ProgramConfigError(
                f"architecture must be a ProgramArchitecture, got {self.architecture!r}"
            )
        for name in ("epochs", "batch_size", "eval_every"):
            _int_at_least(self, name, 1)
        _int_at_least(self, "dataset_size", 10)
        _int_at_least(self, "seed", 0)
        if not (isinstance(self.lr, int | float) and self.lr > 0):
            raise ProgramConfigError(f"lr must be a positive number, got {self.lr!r}")
        if not (0 < self.tau_end <= self.tau_init):
            raise ProgramConfigError(
                f"temperatures must satisfy 0 < tau_end <= tau_init, got tau_init={self.tau_init!r}, "
                f"tau_end={self.tau_end!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


def _int_at_least(obj: Any, name: str, low: int) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ProgramConfigError(
            f"{type(obj).__name__}.{name} must be an int >= {low}, got {value!r}"
        )
