"""Sparse autoencoders (SAEs): ReLU + L1 and TopK dictionaries over one hook's activations.

An SAE reads an activation ``x`` (``[..., d_in]``) from one TransformerLens hook, scales it by
``activation_scale`` (chosen at training time so the scaled activations have unit mean squared
norm), and writes it as a sparse non-negative combination of ``d_sae`` decoder rows:

    f = act((s * x - b_dec) @ W_enc + b_enc)          act: ReLU, or TopK then ReLU
    x_hat = (f @ W_dec + b_dec) / s

Parameter names and shapes are SAELens' (``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``,
``b_enc [d_sae]``, ``b_dec [d_in]``), so ``models.saes`` can write SAELens' on-disk format with
the scale folded in. Decoder rows are kept unit-norm by the trainer (``analysis.sae_training``).

Nothing here reads or writes files: ``to_state``/``from_state`` give the tensors and JSON-safe
config that ``models.saes`` stores.

Example:
    >>> sae = SparseAutoencoder(SAEConfig(d_in=32, d_sae=128, architecture="topk", k=4))
    >>> sae.encode(torch.randn(10, 32)).gt(0).sum(-1).max().item() <= 4
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from analysis.errors import OptionError

Architecture = Literal["relu", "topk"]
ARCHITECTURES: tuple[str, ...] = ("relu", "topk")
STATE_FORMAT = "mechscope-sae"
STATE_VERSION = 1


@dataclass(frozen=True)
class SAEConfig:
    """The shape and kind of an SAE, and where it reads from.

    Attributes:
        d_in: width of the activations it reads (``d_model`` for the residual stream).
        d_sae: number of latents (dictionary size).
        architecture: ``relu`` (trained with an L1 penalty) or ``topk`` (exactly the ``k``
            largest pre-activations kept, then ReLU).
        k: latents kept per token (``topk`` only).
        activation_scale: inputs are multiplied by this before encoding and reconstructions
            divided by it; the trainer sets it so scaled activations have unit mean squared
            norm (1.0: no scaling).
        hook_name: the TransformerLens hook it reads (``blocks.3.hook_resid_post``).
        model_name: the model it was trained on.
    """

    d_in: int
    d_sae: int
    architecture: Architecture = "topk"
    k: int = 32
    activation_scale: float = 1.0
    hook_name: str = ""
    model_name: str = ""

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise OptionError(
                f"unknown SAE architecture {self.architecture!r}; valid: {', '.join(ARCHITECTURES)}"
            )
        if self.d_in < 1 or self.d_sae < 1:
            raise OptionError(f"d_in and d_sae must be >= 1, got {self.d_in}, {self.d_sae}")
        if self.architecture == "topk" and not 1 <= self.k <= self.d_sae:
            raise OptionError(f"k must be in 1..d_sae={self.d_sae} for a TopK SAE, got {self.k}")
        if not (math.isfinite(self.activation_scale) and self.activation_scale > 0):
            raise OptionError(
                f"activation_scale must be finite and > 0, got {self.activation_scale}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAEConfig:
        """Rebuild from ``to_dict`` output (unknown keys are ignored).

        Raises:
            OptionError: a missing required field or a value out of range.
        """
        known = {f.name for f in fields(cls)}
        missing = [k for k in ("d_in", "d_sae") if k not in data]
        if missing:
            raise OptionError(f"SAE config has no field {missing[0]!r}")
        return cls(**{k: v for k, v in data.items() if k in known})


class SparseAutoencoder(nn.Module):
    """A sparse autoencoder (see the module docstring for the maths).

    Attributes:
        cfg: its ``SAEConfig``.
        W_enc, b_enc, W_dec, b_dec: the parameters, named and shaped as in SAELens.

    Example:
        >>> sae = SparseAutoencoder(SAEConfig(d_in=8, d_sae=16))
        >>> sae(torch.zeros(3, 8)).shape
        torch.Size([3, 8])
    """

    def __init__(self, cfg: SAEConfig, *, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        # Offset so that seed 0 here never draws the same numbers as a seed-0 data generator.
        gen = torch.Generator().manual_seed(1_000_003 + seed)
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=gen)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        # Tied initialisation (encoder = decoder transpose) starts every latent on its own
        # direction and avoids many dead latents early on.
        self.W_enc = nn.Parameter(w_dec.T.clone().contiguous())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))

    # -- the maths ------------------------------------------------------------------------
    def pre_acts(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Encoder pre-activations (before ReLU / TopK)."""
        scaled = x.to(self.W_enc.dtype) * self.cfg.activation_scale
        return (scaled - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_sae"]:
        """ReLU, or keep the ``k`` largest pre-activations and ReLU them (TopK)."""
        if self.cfg.architecture == "relu":
            return torch.relu(pre)
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, indices, values.relu())

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Latent activations of raw (unscaled) activations ``x``."""
        return self.activate(self.pre_acts(x))

    def decode_scaled(self, f: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        """Reconstruction in the scaled space (what the trainer compares against)."""
        return f @ self.W_dec + self.b_dec

    def decode(self, f: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        """Reconstruction of raw activations from latent activations."""
        return self.decode_scaled(f) / self.cfg.activation_scale

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        """``decode(encode(x))``."""
        return self.decode(self.encode(x))

    # -- directions -------------------------------------------------------------------------
    def direction(self, latent: int) -> Float[Tensor, " d_in"]:
        """The unit decoder direction of one latent, in the raw activation space.

        Raises:
            OptionError: for a latent outside ``0..d_sae-1``.
        """
        self.check_latent(latent)
        row = self.W_dec[latent].detach()
        return row / row.norm().clamp_min(1e-12)

    def check_latent(self, latent: int) -> None:
        """Raise ``OptionError`` for a latent index out of range."""
        if not 0 <= int(latent) < self.cfg.d_sae:
            raise OptionError(
                f"latent {latent} is out of range; this SAE has latents 0..{self.cfg.d_sae - 1}"
            )

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Rescale every decoder row to unit norm (the trainer calls this after each step)."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    # -- state ------------------------------------------------------------------------------
    def to_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """``(tensors, config)`` to save: SAELens-named float32 tensors and a JSON-safe dict."""
        tensors = {
            name: p.detach().cpu().float().contiguous() for name, p in self.named_parameters()
        }
        meta = {"format": STATE_FORMAT, "version": STATE_VERSION, "config": self.cfg.to_dict()}
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], meta: dict[str, Any]) -> SparseAutoencoder:
        """Rebuild an SAE from ``to_state`` output.

        Raises:
            OptionError: a wrong format or version, a missing tensor or a shape that does not
                match the config (the message names the field).
        """
        if meta.get("format") != STATE_FORMAT or meta.get("version") != STATE_VERSION:
            raise OptionError(
                f"SAE state field 'format'/'version' is {meta.get('format')!r}/"
                f"{meta.get('version')!r}; expected {STATE_FORMAT!r}/{STATE_VERSION}"
            )
        cfg = SAEConfig.from_dict(dict(meta.get("config") or {}))
        sae = cls(cfg)
        expected = {name: tuple(p.shape) for name, p in sae.named_parameters()}
        for name, shape in expected.items():
            if name not in tensors:
                raise OptionError(f"SAE state has no tensor {name!r}")
            if tuple(tensors[name].shape) != shape:
                raise OptionError(
                    f"SAE tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {shape}"
                )
        with torch.no_grad():
            for name, param in sae.named_parameters():
                param.copy_(tensors[name].float())
        return sae

    def with_config(self, **changes: Any) -> SparseAutoencoder:
        """A copy with config fields changed (e.g. ``hook_name``) and the same weights."""
        tensors, meta = self.to_state()
        meta = {**meta, "config": replace(self.cfg, **changes).to_dict()}
        return SparseAutoencoder.from_state(tensors, meta)
