"""How good an SAE is: reconstruction, sparsity, dead latents, the model's loss with the SAE
spliced in, and recovery of planted features on synthetic data.

CE loss recovered = (CE_zero - CE_spliced) / (CE_zero - CE_clean): 1 when splicing the
reconstruction in costs nothing, 0 when it is as bad as zeroing the activation. The BOS position
is left as it is in both the spliced and the zero-ablated runs: the SAE never saw BOS (its
activations are outliers by orders of magnitude) and a broken BOS would dominate the loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from analysis.activations import capture
from analysis.errors import OptionError
from analysis.hooks import require_hooks
from analysis.protocol import model_name
from analysis.sae import SparseAutoencoder


@dataclass(frozen=True)
class SAEMetrics:
    """An SAE measured on held-out tokens of its model.

    Attributes:
        model_name, hook_name: where it reads.
        n_tokens: non-BOS positions measured.
        mse: mean over tokens of the squared reconstruction error summed over dims, in the
            scaled (unit mean squared norm) space, so it compares across layers.
        fve: fraction of variance explained, ``1 - SSE / SS(x - mean x)``.
        l0: mean active latents per token.
        dead_fraction: share of latents that never fired on these tokens.
        ce_clean, ce_spliced, ce_zero: next-token cross-entropy (nats) of the model as is, with
            the reconstruction spliced in, and with the activation zeroed (BOS kept).
        ce_recovered: ``(ce_zero - ce_spliced) / (ce_zero - ce_clean)``.
        latent_frequency: ``[d_sae]`` share of tokens on which each latent fired.
    """

    model_name: str
    hook_name: str
    n_tokens: int
    mse: float
    fve: float
    l0: float
    dead_fraction: float
    ce_clean: float
    ce_spliced: float
    ce_zero: float
    ce_recovered: float
    latent_frequency: Float[Tensor, " d_sae"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (frequencies as a list)."""
        out = asdict(self)
        out["latent_frequency"] = self.latent_frequency.tolist()
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per metric."""
        d = {k: v for k, v in self.to_dict().items() if k != "latent_frequency"}
        return pd.DataFrame({"metric": list(d), "value": [str(v) for v in d.values()]})


def _ce(logits: Tensor, tokens: Tensor, targets: Tensor | None) -> tuple[float, int]:
    """Summed NLL and count: next-token, or per-position ``targets`` (-1: not scored)."""
    if targets is None:
        logp = logits[:, :-1].float().log_softmax(-1)
        return float(-logp.gather(-1, tokens[:, 1:, None]).sum()), tokens[:, 1:].numel()
    keep = targets >= 0
    logp = logits.float().log_softmax(-1)
    nll = -logp.gather(-1, targets.clamp_min(0)[..., None])[..., 0]
    return float(nll[keep].sum()), int(keep.sum())


@torch.inference_mode()
def evaluate_sae(
    model: Any,
    sae: SparseAutoencoder,
    tokens: Int[Tensor, "seq pos"],
    *,
    hook_name: str | None = None,
    targets: Int[Tensor, "seq pos"] | None = None,
    batch_size: int = 8,
    with_loss: bool = True,
) -> SAEMetrics:
    """Reconstruction, sparsity, dead latents and CE loss recovered on ``tokens``.

    Args:
        model: the hooked model the SAE was trained on.
        sae: the SAE.
        tokens: ``[seq, pos]`` held-out token windows, BOS in column 0.
        hook_name: the hook (default: the SAE's own ``cfg.hook_name``).
        targets: ``[seq, pos]`` output-class ids per position for task models whose outputs
            are not next tokens (``-1``: not scored); ``None``: next-token prediction.
        batch_size: sequences per forward pass.
        with_loss: also measure the model's loss clean / spliced / zeroed (three full forward
            passes per batch); ``False`` leaves the ``ce_*`` fields NaN.

    Raises:
        HookNotFoundError: a hook the model lacks.
        OptionError: no hook name, a width mismatch or too few positions.

    Example:
        >>> evaluate_sae(lm, state.sae, held_out_tokens).ce_recovered      # doctest: +SKIP
        0.93
    """
    hook = hook_name or sae.cfg.hook_name
    if not hook:
        raise OptionError("the SAE names no hook; pass hook_name")
    require_hooks(model, [hook])
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise OptionError(f"tokens must be [seq, pos>=2], got shape {tuple(tokens.shape)}")
    sse = total_sq = 0.0
    sums = torch.zeros(sae.cfg.d_in, dtype=torch.float64)
    n = 0
    l0 = 0.0
    fired = torch.zeros(sae.cfg.d_sae)
    ce = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
    n_pred = 0
    if targets is not None and targets.shape != tokens.shape:
        raise OptionError(
            f"targets have shape {tuple(targets.shape)}; tokens {tuple(tokens.shape)}"
        )
    scale = sae.cfg.activation_scale

    def splice(act: Tensor, hook: Any) -> Tensor:
        out = sae(act).to(act.dtype)
        out[:, 0] = act[:, 0]
        return out

    def zero(act: Tensor, hook: Any) -> Tensor:
        out = torch.zeros_like(act)
        out[:, 0] = act[:, 0]
        return out

    for start in range(0, tokens.shape[0], batch_size):
        batch = tokens[start : start + batch_size]
        x = capture(model, batch, [hook])[hook][:, 1:]
        if x.shape[-1] != sae.cfg.d_in:
            raise OptionError(
                f"hook {hook!r} has width {x.shape[-1]}; the SAE reads {sae.cfg.d_in}"
            )
        x = x.reshape(-1, x.shape[-1])
        f = sae.encode(x)
        xs, xh = x * scale, sae.decode_scaled(f)
        sse += float((xh - xs).pow(2).sum())
        sums += xs.double().sum(0)
        total_sq += float(xs.double().pow(2).sum())
        n += x.shape[0]
        l0 += float((f > 0).sum())
        fired += (f > 0).float().sum(0)
        if not with_loss:
            continue
        tgt = None if targets is None else targets[start : start + batch_size]
        nll, count = _ce(model(batch), batch, tgt)
        ce["clean"] += nll
        n_pred += count
        with model.hooks(fwd_hooks=[(hook, splice)]):
            ce["spliced"] += _ce(model(batch), batch, tgt)[0]
        with model.hooks(fwd_hooks=[(hook, zero)]):
            ce["zero"] += _ce(model(batch), batch, tgt)[0]
    sst = total_sq - float((sums.pow(2)).sum()) / n
    nan = float("nan")
    clean, spliced, zeroed = (
        ce[k] / n_pred if n_pred else nan for k in ("clean", "spliced", "zero")
    )
    denom = zeroed - clean
    return SAEMetrics(
        model_name=model_name(model), hook_name=hook, n_tokens=n, mse=sse / n,
        fve=1 - sse / max(sst, 1e-12), l0=l0 / n,
        dead_fraction=float((fired == 0).float().mean()), ce_clean=clean, ce_spliced=spliced,
        ce_zero=zeroed, ce_recovered=(zeroed - spliced) / denom if abs(denom) > 1e-9 else float("nan"),
        latent_frequency=fired / n,
    )  # fmt: skip


@torch.inference_mode()
def reconstruction_metrics(
    sae: SparseAutoencoder, rows: Float[Tensor, "row d_in"], *, batch: int = 4096
) -> dict[str, float]:
    """``{mse, fve, l0, dead_fraction, n_tokens}`` of an SAE on stored activation rows.

    The same definitions as ``SAEMetrics`` (without the model's loss).
    """
    if rows.ndim != 2 or rows.shape[-1] != sae.cfg.d_in or rows.shape[0] == 0:
        raise OptionError(f"rows must be [n>0, {sae.cfg.d_in}], got {tuple(rows.shape)}")
    scale = sae.cfg.activation_scale
    sse = total_sq = l0 = 0.0
    sums = torch.zeros(sae.cfg.d_in, dtype=torch.float64)
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    for part in rows.split(batch):
        x = part.float()
        f = sae.encode(x)
        xs = x * scale
        sse += float((sae.decode_scaled(f) - xs).pow(2).sum())
        sums += xs.double().sum(0)
        total_sq += float(xs.double().pow(2).sum())
        l0 += float((f > 0).sum())
        fired |= (f > 0).any(0)
    n = rows.shape[0]
    sst = total_sq - float(sums.pow(2).sum()) / n
    return {"mse": sse / n, "fve": 1 - sse / max(sst, 1e-12), "l0": l0 / n,
            "dead_fraction": float((~fired).float().mean()), "n_tokens": n}  # fmt: skip


# -- planted features ------------------------------------------------------------------------------


def planted_features(
    n_features: int = 64,
    d: int = 32,
    *,
    p: float = 0.04,
    n_samples: int = 20_000,
    seed: int = 0,
) -> tuple[Float[Tensor, "sample d"], Float[Tensor, "feature d"]]:
    """Synthetic activations: sparse non-negative mixes of known unit directions.

    Each of ``n_features`` random unit directions in ``R^d`` is on with probability ``p`` and
    magnitude ``U(0, 1)`` (PAPERS.md, "Calibration of an SAE recovery test").

    Returns:
        ``(data [n_samples, d], directions [n_features, d])``.

    Example:
        >>> data, truth = planted_features(seed=0)
        >>> tuple(data.shape), tuple(truth.shape)
        ((20000, 32), (64, 32))
    """
    gen = torch.Generator().manual_seed(seed)
    directions = torch.randn(n_features, d, generator=gen)
    directions /= directions.norm(dim=-1, keepdim=True)
    on = torch.rand(n_samples, n_features, generator=gen) < p
    magnitude = torch.rand(n_samples, n_features, generator=gen)
    return (on * magnitude) @ directions, directions


def gaussian_control(
    data: Float[Tensor, "sample d"], *, seed: int = 0
) -> Float[Tensor, "sample d"]:
    """Gaussian data with the mean and covariance of ``data``: no sparse features to find."""
    gen = torch.Generator().manual_seed(seed)
    mean = data.mean(0)
    cov = torch.cov(data.T.double())
    chol = torch.linalg.cholesky(cov + 1e-9 * torch.eye(cov.shape[0], dtype=cov.dtype))
    z = torch.randn(data.shape[0], data.shape[1], generator=gen, dtype=torch.float64)
    return (z @ chol.T + mean.double()).float()


def max_cosine(
    truth: Float[Tensor, "feature d"], decoder: Float[Tensor, "latent d"]
) -> Float[Tensor, " feature"]:
    """For each true direction, its best cosine similarity with any decoder row."""
    t = truth / truth.norm(dim=-1, keepdim=True)
    w = decoder / decoder.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (t @ w.T).max(-1).values


def mean_max_cosine(truth: Tensor, decoder: Tensor) -> float:
    """MMCS: the mean over true directions of ``max_cosine``."""
    return float(max_cosine(truth, decoder).mean())
