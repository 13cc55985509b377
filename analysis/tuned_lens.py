"""The tuned lens: a learned affine translator per layer in front of the logit lens.

For layer ``l`` the lens reads ``unembed(ln_final(h_l @ A_l + b_l))`` where ``h_l`` is the residual
stream entering block ``l``. ``A_l = I, b_l = 0`` is the logit lens (``TunedLens.identity``).
Two ways to fit the translators, both with the model frozen and activations streamed in bounded
batches (only the residual hooks are cached, and at most ``max_tokens`` tokens are read):

* ``ols``: closed-form least squares from ``h_l`` to the final residual before ``ln_final``, as in
  Jump to Conclusions (Yom Din et al. 2024), accumulated as float64 normal equations so memory is
  ``O(n_layers * d_model^2)`` whatever the token count. We fit an intercept by default (see
  ``TunedLensOptions.intercept``).
* ``kl``: start from the identity or from OLS, then Adam on KL(final distribution || lens
  distribution), as in the tuned lens of Belrose et al. (2023).

Nothing here reads or writes files: ``to_state``/``from_state`` give tensors and string metadata
that ``models.lenses`` saves.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from analysis.errors import OptionError
from analysis.hooks import require_hooks
from analysis.lens import LensResult, Translator, lens_hooks, run_lens
from analysis.protocol import Inputs, model_name, tokens_of, unembed

#: ``progress(stage, done, total)``: ``stage`` is ``ols``, ``kl`` or ``evaluate``.
Progress = Callable[[str, int, int], None]

STATE_FORMAT = "mechscope-tuned-lens"
STATE_VERSION = "1"


@dataclass(frozen=True)
class TunedLensOptions:
    """How to fit a tuned lens.

    Attributes:
        method: ``ols`` (closed form) or ``kl`` (gradient descent on KL to the final output).
        max_tokens: the most (non-BOS) tokens read for fitting; bounds time, not memory.
        max_seq_len: texts are cut to this many tokens.
        batch_size: texts per forward pass.
        intercept: fit ``b_l`` in OLS. Jump to Conclusions fits none, because GPT-2's final
            LayerNorm removes the mean anyway; we keep it because the lens translator is
            affine, the final norm of Llama-style models (RMSNorm) does not centre, and residual
            streams carry large constant directions (attention-sink / massive activations) that
            an intercept absorbs instead of bending ``A_l``. It costs one ``d_model`` vector.
        ridge: Tikhonov term added to the input covariance, relative to its mean eigenvalue,
            so that rank-deficient layers (e.g. the embedding of a small vocabulary) are solvable.
        init: for ``kl``: start from the ``identity`` (the logit lens) or from ``ols``.
        steps: Adam steps for ``kl`` (one batch each; texts are cycled within ``max_tokens``).
        lr: Adam learning rate for ``kl``.
    """

    method: Literal["ols", "kl"] = "ols"
    max_tokens: int = 20_000
    max_seq_len: int = 128
    batch_size: int = 8
    intercept: bool = True
    ridge: float = 1e-4
    init: Literal["identity", "ols"] = "ols"
    steps: int = 300
    lr: float = 1e-3

    def __post_init__(self) -> None:
        if self.method not in ("ols", "kl"):
            raise OptionError(f"unknown method {self.method!r}; valid: ols, kl")
        if self.init not in ("identity", "ols"):
            raise OptionError(f"unknown init {self.init!r}; valid: identity, ols")
        for name in ("max_tokens", "max_seq_len", "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise OptionError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_seq_len < 2:
            raise OptionError(f"max_seq_len must be at least 2, got {self.max_seq_len}")
        if self.ridge < 0 or self.lr <= 0:
            raise OptionError(f"ridge must be >= 0 and lr > 0, got {self.ridge}, {self.lr}")


@dataclass(frozen=True, eq=False)
class TunedLens:
    """Per-layer affine translators ``h -> h @ weight[l] + bias[l]`` for the residual entering block l.

    Attributes:
        model_name: the model it was fitted on.
        d_model, n_layers: the model's sizes (checked against a model before use).
        weight: ``[layer, d_model_in, d_model_out]`` (row-vector convention, like TL weights).
        bias: ``[layer, d_model]``.
        fitted_by: ``identity``, ``ols`` or ``kl``.
        fit_info: how it was fitted (tokens, seconds, options), as strings.
    """

    model_name: str
    d_model: int
    n_layers: int
    weight: Float[Tensor, "layer d_model d_model"] = field(repr=False)
    bias: Float[Tensor, "layer d_model"] = field(repr=False)
    fitted_by: str = "identity"
    fit_info: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        want_w = (self.n_layers, self.d_model, self.d_model)
        if tuple(self.weight.shape) != want_w:
            raise OptionError(
                f"lens weight has shape {tuple(self.weight.shape)}, expected {want_w}"
            )
        if tuple(self.bias.shape) != (self.n_layers, self.d_model):
            raise OptionError(
                f"lens bias has shape {tuple(self.bias.shape)}, expected {(self.n_layers, self.d_model)}"
            )

    @classmethod
    def identity(cls, model: Any) -> TunedLens:
        """The untrained lens (``A = I``, ``b = 0``): identical to the logit lens."""
        n, d = model.cfg.n_layers, model.cfg.d_model
        return cls(model_name(model), d, n, torch.eye(d).repeat(n, 1, 1), torch.zeros(n, d))

    def translate(self, layer: int, resid: Tensor) -> Tensor:
        """Map a residual ``[..., d_model]`` entering block ``layer`` to the final residual space."""
        w = self.weight[layer].to(resid.device, resid.dtype)
        return resid @ w + self.bias[layer].to(resid.device, resid.dtype)

    @property
    def translator(self) -> Translator:
        """The ``run_lens`` translator for this lens."""
        return self.translate

    def check_model(self, model: Any) -> None:
        """Raise ``OptionError`` if the model's sizes differ from the lens'."""
        got = (model.cfg.d_model, model.cfg.n_layers)
        if got != (self.d_model, self.n_layers):
            raise OptionError(
                f"lens for {self.model_name!r} has d_model={self.d_model}, n_layers={self.n_layers}; "
                f"model {model_name(model)!r} has d_model={got[0]}, n_layers={got[1]}"
            )

    def to_state(self) -> tuple[dict[str, Tensor], dict[str, str]]:
        """Tensors and string metadata to save (e.g. as safetensors)."""
        meta = {"format": STATE_FORMAT, "version": STATE_VERSION, "model_name": self.model_name,
                "d_model": str(self.d_model), "n_layers": str(self.n_layers),
                "fitted_by": self.fitted_by, "fit_info": json.dumps(self.fit_info)}  # fmt: skip
        state = {"weight": self.weight.detach().cpu().contiguous(),
                 "bias": self.bias.detach().cpu().contiguous()}  # fmt: skip
        return state, meta

    @classmethod
    def from_state(cls, state: dict[str, Tensor], meta: dict[str, str]) -> TunedLens:
        """Rebuild a lens from ``to_state`` output.

        Raises:
            OptionError: a missing or malformed field or tensor (the message names it).
        """
        for key in ("format", "version", "model_name", "d_model", "n_layers", "fitted_by"):
            if key not in meta:
                raise OptionError(f"lens metadata has no field {key!r}")
        if meta["format"] != STATE_FORMAT or meta["version"] != STATE_VERSION:
            raise OptionError(
                f"lens metadata field 'format'/'version' is {meta['format']!r}/{meta['version']!r}; "
                f"expected {STATE_FORMAT!r}/{STATE_VERSION!r}"
            )
        for key in ("weight", "bias"):
            if key not in state:
                raise OptionError(f"lens state has no tensor {key!r}")
        try:
            d_model, n_layers = int(meta["d_model"]), int(meta["n_layers"])
            fit_info = json.loads(meta.get("fit_info", "{}"))
        except ValueError as exc:
            raise OptionError(
                f"lens metadata field 'd_model'/'n_layers'/'fit_info': {exc}"
            ) from exc
        return cls(meta["model_name"], d_model, n_layers, state["weight"].float(),
                   state["bias"].float(), meta["fitted_by"], dict(fit_info))  # fmt: skip


@dataclass(frozen=True)
class TunedLensFitReport:
    """How a fit went.

    Attributes:
        method, init: as in the options.
        n_texts, n_tokens: texts and (non-BOS) token positions read.
        seconds: wall time of the fit.
        layer_labels: ``L0 in`` .. ``L{n-1} in``.
        r2: ``[layer]`` share of the final residual's variance the OLS map explains (``ols``,
            and ``kl`` started from OLS), else ``None``.
        loss_history: mean KL over layers per Adam step (``kl`` only).
        options: the options used.
    """

    method: str
    init: str
    n_texts: int
    n_tokens: int
    seconds: float
    layer_labels: list[str]
    r2: Float[Tensor, " layer"] | None = field(default=None, repr=False)
    loss_history: list[float] = field(default_factory=list, repr=False)
    options: TunedLensOptions = field(default_factory=TunedLensOptions)

    def to_frame(self) -> pd.DataFrame:
        """One row per layer (with ``r2`` when there is one)."""
        r2 = [None] * len(self.layer_labels) if self.r2 is None else self.r2.tolist()
        return pd.DataFrame({"layer": self.layer_labels, "r2": r2})

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"method": self.method, "init": self.init, "n_texts": self.n_texts,
                "n_tokens": self.n_tokens, "seconds": round(self.seconds, 3),
                "layer_labels": self.layer_labels,
                "r2": None if self.r2 is None else self.r2.tolist(),
                "loss_history": self.loss_history, "options": asdict(self.options)}  # fmt: skip


# -- streaming activations -------------------------------------------------------------------


@dataclass
class _Batch:
    inputs: list[Tensor]  # per row: [n_tokens, d_model] residual entering each block
    final: Tensor  # [n_tokens, d_model] final residual (before ln_final)
    n_tokens: int


def _token_rows(model: Any, texts: Sequence[Inputs], max_seq_len: int) -> Iterator[Tensor]:
    for text in texts:
        ids = tokens_of(model, text)[0, :max_seq_len]
        if ids.shape[0] >= 2:  # position 0 (BOS) is never used
            yield ids


def _equal_length_chunks(rows: Iterator[Tensor], batch_size: int) -> Iterator[list[Tensor]]:
    """Group token rows into batches of one length each (flushing the rest at the end)."""
    waiting: dict[int, list[Tensor]] = {}
    for row in rows:
        group = waiting.setdefault(int(row.shape[0]), [])
        group.append(row)
        if len(group) == batch_size:
            yield waiting.pop(int(row.shape[0]))
    yield from waiting.values()


def _stream(
    model: Any, texts: Sequence[Inputs], *, max_tokens: int, max_seq_len: int, batch_size: int,
    cycle: bool = False,
) -> Iterator[_Batch]:  # fmt: skip
    """Batches of residuals at the non-BOS positions of the first ``max_tokens`` tokens of texts.

    With ``cycle`` the same ``max_tokens`` are read again and again (the caller stops). Only the
    lens hooks are cached, one batch at a time. A batch holds rows of one length, so nothing is
    padded: padding would change every position of a bidirectional model. Position 0 is
    dropped: it is the same BOS token in every text, and its residual (an attention sink with
    an outlier norm in many models) would dominate least squares.
    """
    names = lens_hooks(model.cfg.n_layers)
    require_hooks(model, names)
    while True:
        budget = max_tokens
        for chunk in _equal_length_chunks(_token_rows(model, texts, max_seq_len), batch_size):
            if budget <= 0:
                break
            tokens = torch.stack(chunk)
            take = min(budget, tokens.shape[0] * (tokens.shape[1] - 1))
            with torch.no_grad():
                _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
            acts = [cache[name][:, 1:].flatten(0, 1)[:take].float() for name in names]
            del cache
            budget -= take
            yield _Batch(acts[:-1], acts[-1], take)
        if not cycle or budget == max_tokens:
            return


# -- fitting ---------------------------------------------------------------------------------


def _fit_ols(
    model: Any, texts: Sequence[Inputs], options: TunedLensOptions, progress: Progress | None
) -> tuple[Tensor, Tensor, Tensor, int]:
    n_layers, d = model.cfg.n_layers, model.cfg.d_model
    f64 = torch.float64
    sx = torch.zeros(n_layers, d, dtype=f64)
    sxx = torch.zeros(n_layers, d, d, dtype=f64)
    sxy = torch.zeros(n_layers, d, d, dtype=f64)
    sy = torch.zeros(d, dtype=f64)
    syy = torch.zeros((), dtype=f64)
    n = 0
    for batch in _stream(model, texts, max_tokens=options.max_tokens,
                         max_seq_len=options.max_seq_len, batch_size=options.batch_size):  # fmt: skip
        y = batch.final
        sy += y.sum(0).double()
        syy += (y.double() ** 2).sum()
        for layer, x in enumerate(batch.inputs):
            # float32 products per batch, float64 across batches: exact enough, twice as fast
            sx[layer] += x.sum(0).double()
            sxx[layer] += (x.T @ x).double()
            sxy[layer] += (x.T @ y).double()
        n += batch.n_tokens
        if progress is not None:
            progress("ols", n, options.max_tokens)
    if n < 2:
        raise OptionError(f"texts gave {n} usable tokens; OLS needs at least 2 (give more text)")
    my = sy / n
    tot = syy / n - my @ my  # total variance of the final residual (sum over dimensions)
    weights, biases, r2 = [], [], []
    for layer in range(n_layers):
        mx = sx[layer] / n
        cxx, cxy = sxx[layer] / n, sxy[layer] / n
        if options.intercept:
            cxx = cxx - torch.outer(mx, mx)
            cxy = cxy - torch.outer(mx, my)
        lam = options.ridge * float(torch.diagonal(cxx).mean()) + 1e-12
        a = torch.linalg.solve(cxx + lam * torch.eye(d, dtype=f64), cxy)
        b = my - mx @ a if options.intercept else torch.zeros(d, dtype=f64)
        # mean squared error of the fit from the raw moments: E||y - xA - b||^2
        mxa = mx @ a
        err = (syy / n - 2 * (a * sxy[layer]).sum() / n + (a * (sxx[layer] @ a)).sum() / n
               - 2 * (b @ my) + 2 * (b @ mxa) + b @ b)  # fmt: skip
        weights.append(a.float())
        biases.append(b.float())
        r2.append(float(1 - err / tot) if tot > 0 else float("nan"))
    return torch.stack(weights), torch.stack(biases), torch.tensor(r2), n


def _kl_rows(final_logp: Tensor, logits: Tensor) -> Tensor:  # per-token KL(final || lens), [tokens]
    logq = logits.float().log_softmax(-1)
    return (final_logp.exp() * (final_logp - logq)).sum(-1)


def _fit_kl(
    model: Any, texts: Sequence[Inputs], options: TunedLensOptions, weight: Tensor, bias: Tensor,
    progress: Progress | None,
) -> tuple[Tensor, Tensor, list[float], int]:  # fmt: skip
    params = [p.clone().requires_grad_(True) for pair in zip(weight, bias) for p in pair]
    opt = torch.optim.Adam(params, lr=options.lr)
    history: list[float] = []
    seen = 0
    stream = _stream(model, texts, max_tokens=options.max_tokens,
                     max_seq_len=options.max_seq_len, batch_size=options.batch_size, cycle=True)  # fmt: skip
    for step, batch in zip(range(options.steps), stream):
        seen = min(seen + batch.n_tokens, options.max_tokens)
        with torch.no_grad():
            final_logp = unembed(model, batch.final).float().log_softmax(-1)
        opt.zero_grad()
        total = 0.0
        for layer, x in enumerate(batch.inputs):
            a, b = params[2 * layer], params[2 * layer + 1]
            loss = _kl_rows(final_logp, unembed(model, x @ a + b)).mean()
            # autograd.grad leaves the frozen model's .grad untouched (no side effects)
            ga, gb = torch.autograd.grad(loss, [a, b])
            a.grad, b.grad = ga, gb
            total += float(loss.detach())
        opt.step()
        history.append(total / len(batch.inputs))
        if progress is not None:
            progress("kl", step + 1, options.steps)
    if not history:
        raise OptionError("texts gave no usable tokens for KL fitting (give more text)")
    w = torch.stack([p.detach() for p in params[0::2]])
    b = torch.stack([p.detach() for p in params[1::2]])
    return w, b, history, seen


def fit_tuned_lens(
    model: Any,
    texts: Sequence[Inputs],
    *,
    options: TunedLensOptions | None = None,
    progress: Progress | None = None,
) -> tuple[TunedLens, TunedLensFitReport]:
    """Fit one affine translator per layer, with the model frozen.

    Args:
        model: a hooked model (HookedTransformer, TransformerBridge or a ``LoadedModel``).
        texts: training inputs: prompts, task sequences or ``[1, pos]`` token tensors.
        options: method and budget (``TunedLensOptions``; default: OLS on up to 20k tokens).
        progress: called as ``progress(stage, done, total)``; nothing is printed.

    Returns:
        ``(lens, report)``.

    Raises:
        OptionError: texts with too few tokens, or invalid options.
        HookNotFoundError: a model without the residual hooks.

    Example:
        >>> lens, report = fit_tuned_lens(lm, train_texts, options=TunedLensOptions("ols"))  # doctest: +SKIP
        >>> run_tuned_lens(lm, lens, "The capital of France is").kl_to_final[:, -1]          # doctest: +SKIP
    """
    options = options or TunedLensOptions()
    start = time.perf_counter()
    n_layers = model.cfg.n_layers
    r2: Tensor | None = None
    history: list[float] = []
    if options.method == "ols" or options.init == "ols":
        weight, bias, r2, n_tokens = _fit_ols(model, texts, options, progress)
    else:
        ident = TunedLens.identity(model)
        weight, bias, n_tokens = ident.weight, ident.bias, 0
    if options.method == "kl":
        weight, bias, history, n_tokens = _fit_kl(model, texts, options, weight, bias, progress)
    seconds = time.perf_counter() - start
    report = TunedLensFitReport(
        method=options.method,
        init=options.init if options.method == "kl" else "-",
        n_texts=len(texts),
        n_tokens=n_tokens,
        seconds=seconds,
        layer_labels=[f"L{layer} in" for layer in range(n_layers)],
        r2=r2,
        loss_history=history,
        options=options,
    )
    info = {"method": options.method, "init": report.init, "n_tokens": str(n_tokens),
            "n_texts": str(len(texts)), "seconds": f"{seconds:.1f}",
            "options": json.dumps(asdict(options))}  # fmt: skip
    lens = TunedLens(model_name(model), model.cfg.d_model, n_layers, weight.float(),
                     bias.float(), options.method, info)  # fmt: skip
    return lens, report


def run_tuned_lens(
    model: Any, lens: TunedLens, inputs: Inputs, *, target: str | None = None, k: int = 10
) -> LensResult:
    """The tuned lens of every layer on one input (``run_lens`` with the lens' translator).

    Raises:
        OptionError: a lens fitted for a model of other sizes, ``k < 1`` or a bad target.

    Example:
        >>> run_tuned_lens(lm, TunedLens.identity(lm), "Hello").method   # doctest: +SKIP
        'tuned'
    """
    lens.check_model(model)
    return run_lens(model, inputs, target=target, k=k, translator=lens.translator, method="tuned")


@torch.no_grad()
def evaluate_lens_kl(
    model: Any,
    texts: Sequence[Inputs],
    lens: TunedLens | None = None,
    *,
    max_tokens: int = 5_000,
    max_seq_len: int = 128,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> Float[Tensor, " layer"]:
    """Mean KL(final distribution || lens distribution) per layer over the non-BOS tokens of texts.

    Args:
        model: a hooked model.
        texts: held-out inputs.
        lens: the lens to score; ``None`` scores the logit lens.
        max_tokens, max_seq_len, batch_size: the token budget and batching.

    Returns:
        ``[n_layers + 1]`` mean KL in nats, rows as in ``LensResult.layer_labels``; the last row
        (the final residual) is 0.

    Example:
        >>> evaluate_lens_kl(lm, held_out, lens) < evaluate_lens_kl(lm, held_out)   # doctest: +SKIP
    """
    if lens is not None:
        lens.check_model(model)
    n_layers = model.cfg.n_layers
    totals = torch.zeros(n_layers + 1, dtype=torch.float64)
    n = 0
    for batch in _stream(model, texts, max_tokens=max_tokens, max_seq_len=max_seq_len,
                         batch_size=batch_size):  # fmt: skip
        final_logp = unembed(model, batch.final).float().log_softmax(-1)
        for layer, x in enumerate(batch.inputs):
            h = x if lens is None else lens.translate(layer, x)
            totals[layer] += _kl_rows(final_logp, unembed(model, h)).clamp_min(0).sum().double()
        n += batch.n_tokens
        if progress is not None:
            progress("evaluate", n, max_tokens)
    if n == 0:
        raise OptionError("texts gave no usable tokens to evaluate (each needs 2 or more)")
    out = (totals / n).float()
    assert math.isfinite(float(out.sum())), "non-finite lens KL"
    return out
