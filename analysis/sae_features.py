"""Feature dashboards: what an SAE latent fires on and what it writes.

``run_feature_activations`` encodes every token of a corpus once and keeps the activations
sparsely (TopK SAEs have ``k`` non-zeros per token), so a dashboard for any latent is then
cheap: its top-activating snippets (a window of tokens around each peak, with per-token
activations), a histogram of its non-zero activations, how often it fires, and the output
tokens its decoder direction promotes and suppresses through the unembedding
(``direction @ W_U``, the direct logit effect, as in SAELens / Neuronpedia dashboards).

Example:
    >>> acts = run_feature_activations(lm, sae, token_windows(lm, load_corpus()[:40], 64))  # doctest: +SKIP
    >>> feature_dashboard(acts, lm, sae, latent=12).top_snippets[0].tokens                   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from analysis.activations import capture
from analysis.errors import OptionError
from analysis.hooks import require_hooks
from analysis.protocol import hooked_module, input_labels, model_name, output_labels
from analysis.sae import SparseAutoencoder


@dataclass(frozen=True)
class FeatureActivations:
    """Every latent's non-zero activations over a token set, stored sparsely.

    Attributes:
        model_name, hook_name: where the SAE reads.
        tokens: ``[seq, pos]`` the token windows (BOS in column 0, never encoded).
        labels: ``[seq][pos]`` token strings.
        index: ``[nnz, 3]`` rows of ``(seq, pos, latent)``.
        values: ``[nnz]`` the activations.
        frequency: ``[d_sae]`` share of (non-BOS) tokens on which each latent fires.
        max_activation: ``[d_sae]`` largest activation of each latent (0: never fired).
    """

    model_name: str
    hook_name: str
    tokens: Int[Tensor, "seq pos"]
    labels: list[list[str]]
    index: Int[Tensor, "nnz 3"]
    values: Float[Tensor, " nnz"]
    frequency: Float[Tensor, " d_sae"]
    max_activation: Float[Tensor, " d_sae"]

    @property
    def n_tokens(self) -> int:
        """Encoded (non-BOS) token positions."""
        return int(self.tokens.shape[0] * (self.tokens.shape[1] - 1))

    def latent_entries(self, latent: int) -> tuple[Int[Tensor, "n 2"], Float[Tensor, " n"]]:
        """``(seq, pos)`` and values where ``latent`` fired."""
        mask = self.index[:, 2] == latent
        return self.index[mask, :2], self.values[mask]

    def to_frame(self) -> pd.DataFrame:
        """One row per latent: frequency and max activation."""
        return pd.DataFrame({"latent": range(len(self.frequency)),
                             "frequency": self.frequency.tolist(),
                             "max_activation": self.max_activation.tolist()})  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (not the sparse activations)."""
        return {"model_name": self.model_name, "hook_name": self.hook_name,
                "n_tokens": self.n_tokens, "frequency": self.frequency.tolist(),
                "max_activation": self.max_activation.tolist()}  # fmt: skip


@torch.inference_mode()
def run_feature_activations(
    model: Any,
    sae: SparseAutoencoder,
    tokens: Int[Tensor, "seq pos"],
    *,
    hook_name: str | None = None,
    batch_size: int = 8,
) -> FeatureActivations:
    """Encode every non-BOS token of ``tokens`` with the SAE and keep the non-zeros.

    Args:
        model: the hooked model the SAE reads.
        sae: the SAE.
        tokens: ``[seq, pos]`` token windows (``analysis.activations.token_windows``).
        hook_name: default: the SAE's ``cfg.hook_name``.
        batch_size: sequences per forward pass (cut at the hook).

    Raises:
        HookNotFoundError: a hook the model lacks.
        OptionError: no hook name, or an activation width that is not the SAE's ``d_in``.
    """
    hook = hook_name or sae.cfg.hook_name
    if not hook:
        raise OptionError("the SAE names no hook; pass hook_name")
    require_hooks(model, [hook])
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise OptionError(f"tokens must be [seq, pos>=2], got shape {tuple(tokens.shape)}")
    index, values = [], []
    fired = torch.zeros(sae.cfg.d_sae)
    peak = torch.zeros(sae.cfg.d_sae)
    for start in range(0, tokens.shape[0], batch_size):
        x = capture(model, tokens[start : start + batch_size], [hook])[hook][:, 1:]
        if x.shape[-1] != sae.cfg.d_in:
            raise OptionError(
                f"hook {hook!r} has width {x.shape[-1]}; the SAE reads {sae.cfg.d_in}"
            )
        f = sae.encode(x)  # [b, pos-1, d_sae]
        nz = f.nonzero()
        nz[:, 0] += start
        nz[:, 1] += 1  # positions in the windows (BOS is 0)
        index.append(nz)
        values.append(f[f > 0])
        fired += (f > 0).float().sum((0, 1))
        peak = torch.maximum(peak, f.amax((0, 1)))
    labels = [input_labels(model, row) for row in tokens]
    n = tokens.shape[0] * (tokens.shape[1] - 1)
    return FeatureActivations(model_name(model), hook, tokens.clone(), labels, torch.cat(index),
                              torch.cat(values), fired / n, peak)  # fmt: skip


@dataclass(frozen=True)
class FeatureSnippet:
    """A window of tokens around one of a latent's peaks.

    Attributes:
        sequence: which token window it comes from.
        position: the peak's position in that window.
        tokens: the window's token strings.
        activations: the latent's activation at each token of the window.
        peak_index: index of the peak in ``tokens``.
    """

    sequence: int
    position: int
    tokens: list[str]
    activations: list[float]
    peak_index: int

    @property
    def peak(self) -> float:
        """The activation at the peak."""
        return self.activations[self.peak_index]


@dataclass(frozen=True)
class FeatureDashboard:
    """One latent, summarised.

    Attributes:
        model_name, hook_name, latent: which latent.
        frequency: share of tokens it fires on; ``max_activation`` its largest value.
        top_snippets: its highest activations, one snippet per peak, strongest first.
        histogram: ``(counts [bins], edges [bins + 1])`` of its non-zero activations.
        promoted, suppressed: ``(token, logit effect)`` of the decoder direction through
            ``W_U``, largest first / most negative first.
    """

    model_name: str
    hook_name: str
    latent: int
    frequency: float
    max_activation: float
    top_snippets: list[FeatureSnippet]
    histogram: tuple[Tensor, Tensor]
    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]

    def to_frame(self) -> pd.DataFrame:
        """One row per snippet: rank, peak, peak token and the text."""
        return pd.DataFrame([
            {"rank": i, "peak": s.peak, "token": s.tokens[s.peak_index],
             "sequence": s.sequence, "position": s.position, "text": "".join(s.tokens)}
            for i, s in enumerate(self.top_snippets)
        ])  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "model_name": self.model_name, "hook_name": self.hook_name, "latent": self.latent,
            "frequency": self.frequency, "max_activation": self.max_activation,
            "top_snippets": [s.__dict__ for s in self.top_snippets],
            "histogram": [self.histogram[0].tolist(), self.histogram[1].tolist()],
            "promoted": self.promoted, "suppressed": self.suppressed,
        }  # fmt: skip


def logit_effects(model: Any, direction: Float[Tensor, " d_model"], k: int = 10):
    """``(promoted, suppressed)``: the ``k`` output tokens ``direction @ W_U`` raises / lowers."""
    w_u = hooked_module(model).W_U.detach().float()
    if w_u.shape[0] != direction.shape[0]:
        raise OptionError(
            f"direction has width {direction.shape[0]}; the unembedding reads {w_u.shape[0]} "
            "(logit effects need an SAE on the residual stream)"
        )
    effect = direction.float() @ w_u
    k = min(k, effect.shape[0])
    top, bottom = effect.topk(k), (-effect).topk(k)
    up = output_labels(model, top.indices.tolist())
    down = output_labels(model, bottom.indices.tolist())
    return ([(t, float(v)) for t, v in zip(up, top.values)],
            [(t, -float(v)) for t, v in zip(down, bottom.values)])  # fmt: skip


def feature_dashboard(
    acts: FeatureActivations,
    model: Any,
    sae: SparseAutoencoder,
    latent: int,
    *,
    n_snippets: int = 8,
    context: int = 8,
    bins: int = 30,
    k_tokens: int = 10,
) -> FeatureDashboard:
    """The dashboard of one latent from ``run_feature_activations`` output.

    Args:
        acts: the corpus activations.
        model: the model (for the unembedding).
        sae: the SAE (for the decoder direction).
        latent: the latent.
        n_snippets: snippets to show; at most one per token window.
        context: tokens shown on each side of a peak.
        bins: histogram bins.
        k_tokens: promoted / suppressed tokens to list.

    Raises:
        OptionError: a latent out of range.
    """
    sae.check_latent(latent)
    where, vals = acts.latent_entries(latent)
    snippets: list[FeatureSnippet] = []
    used: set[int] = set()
    dense: dict[int, Tensor] = {}
    for i in vals.argsort(descending=True).tolist():
        seq, pos = int(where[i, 0]), int(where[i, 1])
        if seq in used:
            continue
        used.add(seq)
        if seq not in dense:
            row = torch.zeros(acts.tokens.shape[1])
            mask = where[:, 0] == seq
            row[where[mask, 1]] = vals[mask]
            dense[seq] = row
        lo, hi = max(1, pos - context), min(acts.tokens.shape[1], pos + context + 1)
        snippets.append(FeatureSnippet(seq, pos, acts.labels[seq][lo:hi],
                                       dense[seq][lo:hi].tolist(), pos - lo))  # fmt: skip
        if len(snippets) >= n_snippets:
            break
    if vals.numel():
        counts, edges = torch.histogram(vals.float(), bins=bins)
    else:
        counts, edges = torch.zeros(bins), torch.linspace(0, 1, bins + 1)
    promoted, suppressed = logit_effects(model, sae.direction(latent), k_tokens)
    return FeatureDashboard(acts.model_name, acts.hook_name, int(latent),
                            float(acts.frequency[latent]), float(acts.max_activation[latent]),
                            snippets, (counts, edges), promoted, suppressed)  # fmt: skip
