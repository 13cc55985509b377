"""Per-head scores over a batch: previous-token, duplicate-token, induction and attention sink.

Previous-token, duplicate-token and induction scores use the standard probe from the induction-
head literature: random token sequences repeated once, ``[BOS, x_1..x_n, x_1..x_n]``. On the
second copy, a duplicate-token head attends from ``x_i`` to its earlier copy and an induction
head to the token *after* its earlier copy. The sink score ("Quantizable Transformers",
Bondarenko et al. 2023) is the attention mass parked on the first (BOS) token, where no-op
heads rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from analysis.errors import OptionError
from analysis.hooks import attn_pattern, head_label, require_hooks
from analysis.protocol import hooked_module, model_name

SCORE_NAMES = ("previous_token", "duplicate_token", "induction", "sink")


@dataclass(frozen=True)
class HeadScoreOptions:
    """How to probe heads.

    Attributes:
        n_sequences: random repeated sequences in the batch.
        half_length: length of each random half (default: as long as the context allows, <= 64).
        seed: seed of the random sequences.
        min_token_id: smallest token id drawn for text models (skips special tokens); task
            models draw from their whole vocabulary except BOS.
    """

    n_sequences: int = 8
    half_length: int | None = None
    seed: int = 0
    min_token_id: int = 100


@dataclass(frozen=True)
class HeadScoresResult:
    """``{score name: [layer, head]}`` for every head of the model."""

    model_name: str
    scores: dict[str, Float[Tensor, "layer head"]]
    options: HeadScoreOptions

    def top(self, score: str, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` highest-scoring heads as ``("L1H4", value)``."""
        if score not in self.scores:
            raise OptionError(f"unknown score {score!r}; valid: {', '.join(self.scores)}")
        values = self.scores[score]
        flat = values.flatten().argsort(descending=True)[:k].tolist()
        n_heads = values.shape[1]
        return [(head_label(i // n_heads, i % n_heads), float(values.flatten()[i])) for i in flat]

    def to_frame(self) -> pd.DataFrame:
        """Long frame: one row per (head, score)."""
        rows = []
        for name, values in self.scores.items():
            for layer in range(values.shape[0]):
                for head in range(values.shape[1]):
                    rows.append({"score": name, "layer": layer, "head": head,
                                 "label": head_label(layer, head), "value": float(values[layer, head])})  # fmt: skip
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"model_name": self.model_name, "options": asdict(self.options),
                "scores": {k: v.tolist() for k, v in self.scores.items()}}  # fmt: skip


def repeated_random_tokens(model: Any, options: HeadScoreOptions) -> tuple[Tensor, int]:
    """``[batch, 1 + 2n]`` ids ``[BOS, x, x]`` and ``n``."""
    cfg = model.cfg
    max_half = (cfg.n_ctx - 1) // 2
    half = options.half_length or min(32, max_half)
    if not 1 <= half <= max_half:
        raise OptionError(f"half_length {half} must be in 1..{max_half} for context {cfg.n_ctx}")
    codec = getattr(model, "codec", None)
    low = 1 if codec is not None else min(options.min_token_id, cfg.d_vocab - 1)
    generator = torch.Generator().manual_seed(options.seed)
    n_ids = cfg.d_vocab - low
    if half <= n_ids:
        # Distinct tokens within a half: with a small vocabulary, repeats inside the half make
        # "the token after the earlier copy" ambiguous and would understate induction.
        half_ids = torch.stack(
            [
                torch.randperm(n_ids, generator=generator)[:half] + low
                for _ in range(options.n_sequences)
            ]
        )
    else:
        half_ids = torch.randint(low, cfg.d_vocab, (options.n_sequences, half), generator=generator)
    bos_id = 0 if codec is not None else _bos_id(model)
    bos = torch.full((options.n_sequences, 1), bos_id, dtype=torch.long)
    return torch.cat([bos, half_ids, half_ids], dim=1), half


def _bos_id(model: Any) -> int:
    tokenizer = getattr(model, "tokenizer", None) or getattr(
        hooked_module(model), "tokenizer", None
    )
    bos = getattr(tokenizer, "bos_token_id", None)
    return int(bos) if bos is not None else 0


@torch.inference_mode()
def run_head_scores(model: Any, options: HeadScoreOptions | None = None) -> HeadScoresResult:
    """Score every head of the model on a batch of repeated random sequences.

    Args:
        model: a hooked model.
        options: ``HeadScoreOptions`` (defaults if ``None``).

    Returns:
        ``HeadScoresResult`` with ``previous_token``, ``duplicate_token``, ``induction`` and
        ``sink`` scores, each the mean attention weight on the expected key (0..1).

    Example:
        >>> scores = run_head_scores(load_model("task:induction"))   # doctest: +SKIP
        >>> scores.top("induction", 1)                                # doctest: +SKIP
        [('L1H0', 0.97)]
    """
    options = options or HeadScoreOptions()
    tokens, half = repeated_random_tokens(model, options)
    names = [attn_pattern(layer) for layer in range(model.cfg.n_layers)]
    require_hooks(model, names)
    inner = hooked_module(model)
    _, cache = inner.run_with_cache(tokens, names_filter=lambda name: name in names)
    patterns = torch.stack([cache[name].float() for name in names])  # layer batch head q k
    second = torch.arange(half + 1, 2 * half + 1)  # query positions of the second copy
    scores = {
        "previous_token": patterns.diagonal(offset=-1, dim1=-2, dim2=-1)[..., 1:].mean((1, -1)),
        "duplicate_token": patterns[..., second, second - half].mean((1, -1)),
        "induction": patterns[..., second, second - half + 1].mean((1, -1)),
        "sink": patterns[..., 1:, 0].mean((1, -1)),
    }
    return HeadScoresResult(model_name(model), {k: v.cpu() for k, v in scores.items()}, options)
