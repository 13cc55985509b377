"""Training sparse autoencoders: our own trainer, streaming, interruptible and resumable.

Loss per batch (in the scaled space, rows ``x`` with unit mean squared norm):

    mse = mean_rows sum_dims (x_hat - x)^2
    relu: loss = mse + l1_coefficient * mean_rows sum_latents f          (decoder rows unit-norm)
    topk: loss = mse + aux_coefficient * AuxK                             (Gao et al. 2024)

AuxK reconstructs the main reconstruction's error from the ``k_aux = d_in / 2`` largest
pre-activations of *dead* latents (none fired in the last ``dead_window`` tokens), which gives
dead latents a gradient again. ReLU SAEs instead resample dead latents every
``resample_every`` steps toward inputs the SAE reconstructs worst (Bricken et al. 2023). After
every Adam step the decoder rows are renormalised to unit norm, and the gradient component
parallel to each row is removed first, so the step does not fight the renormalisation.

The activation scale (unit mean squared norm) and ``b_dec`` (the mean) are estimated from the
first ``norm_batches`` batches; the scale is stored in the SAE's config.

State is a plain ``SAETrainState`` (weights, Adam moments, counters, curves); ``to_state`` /
``from_state`` give tensors and JSON that ``models.saes`` writes, so a run killed or
interrupted (Ctrl-C, ``should_stop``) resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from itertools import chain
from typing import Any, Literal

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from analysis.activations import activation_rows
from analysis.errors import OptionError
from analysis.sae import ARCHITECTURES, Architecture, SAEConfig, SparseAutoencoder

#: ``progress(step, total_steps, latest_metrics)``.
Progress = Callable[[int, int, dict[str, float]], None]
CURVES = ("loss", "mse", "fve", "l0", "aux", "dead_fraction")
TRAIN_STATE_FORMAT = "mechscope-sae-train-state"


@dataclass(frozen=True)
class SAETrainOptions:
    """How to train an SAE.

    Attributes:
        d_sae: number of latents.
        architecture: ``topk`` or ``relu``.
        k: latents kept per token (``topk``).
        l1_coefficient: L1 weight (``relu``), on activations in the unit-norm scaled space.
        lr: Adam learning rate.
        lr_decay_fraction: the last fraction of steps decays the rate linearly to 0.
        steps: optimiser steps.
        batch_size: activation rows (tokens) per step.
        dead_handling: ``auto`` (AuxK for TopK, resampling for ReLU), ``auxk``, ``resample``
            or ``none``.
        dead_window: tokens without a firing after which a latent counts as dead.
        aux_coefficient: AuxK weight (1/32 in Gao et al.).
        resample_every: steps between resamplings (``resample``), none in the last quarter.
        normalise: scale activations to unit mean squared norm (else scale 1).
        norm_batches: batches used to estimate the scale and the initial ``b_dec``.
        sequences_per_forward, buffer_rows: streaming from a model (``train_sae``).
        seed: weights, shuffle and resampling seed.
    """

    d_sae: int = 2048
    architecture: Architecture = "topk"
    k: int = 32
    l1_coefficient: float = 5.0
    lr: float = 1e-3
    lr_decay_fraction: float = 0.2
    steps: int = 1000
    batch_size: int = 1024
    dead_handling: Literal["auto", "auxk", "resample", "none"] = "auto"
    dead_window: int = 100_000
    aux_coefficient: float = 1 / 32
    resample_every: int = 250
    normalise: bool = True
    norm_batches: int = 4
    sequences_per_forward: int = 8
    buffer_rows: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise OptionError(
                f"unknown SAE architecture {self.architecture!r}; valid: {', '.join(ARCHITECTURES)}"
            )
        for name in ("d_sae", "k", "steps", "batch_size", "dead_window", "resample_every",
                     "norm_batches", "sequences_per_forward"):  # fmt: skip
            if getattr(self, name) < 1:
                raise OptionError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.architecture == "topk" and self.k > self.d_sae:
            raise OptionError(f"k={self.k} is larger than d_sae={self.d_sae}")
        if self.dead_handling not in ("auto", "auxk", "resample", "none"):
            raise OptionError(
                f"unknown dead_handling {self.dead_handling!r}; valid: auto, auxk, resample, none"
            )
        if self.lr <= 0 or self.l1_coefficient < 0 or self.aux_coefficient < 0:
            raise OptionError("lr must be > 0 and l1_coefficient, aux_coefficient >= 0")
        if not 0 <= self.lr_decay_fraction <= 1:
            raise OptionError(f"lr_decay_fraction must be in [0, 1], got {self.lr_decay_fraction}")

    @property
    def dead_method(self) -> str:
        """The dead-latent handling in effect (``auto`` resolved)."""
        if self.dead_handling != "auto":
            return self.dead_handling
        return "auxk" if self.architecture == "topk" else "resample"


@dataclass
class SAETrainState:
    """Everything needed to continue training: a plain object, saved by ``models.saes``.

    Attributes:
        sae: the SAE so far.
        options: the options of the run.
        optimizer: Adam's ``state_dict()``.
        step: optimiser steps done.
        tokens_seen: activation rows trained on.
        sequences_read: sequences read from the token stream (to resume it).
        tokens_since_fired: ``[d_sae]`` rows since each latent last fired.
        curves: ``{name: [step]}`` per-step metrics (``CURVES``).
        seconds: training wall time so far.
        interrupted: the last run stopped before ``options.steps``.
    """

    sae: SparseAutoencoder
    options: SAETrainOptions
    optimizer: dict[str, Any]
    step: int = 0
    tokens_seen: int = 0
    sequences_read: int = 0
    tokens_since_fired: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    curves: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CURVES})
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def done(self) -> bool:
        """Whether all ``options.steps`` are done."""
        return self.step >= self.options.steps

    def dead_fraction(self) -> float:
        """Share of latents that have not fired in the last ``dead_window`` rows."""
        return float((self.tokens_since_fired >= self.options.dead_window).float().mean())

    def curves_frame(self) -> pd.DataFrame:
        """One row per step: ``step`` and every curve."""
        return pd.DataFrame({"step": range(1, len(self.curves["loss"]) + 1), **self.curves})

    def summary(self) -> dict[str, float]:
        """Means of the curves over the last 5% of steps (at least 1), plus step and time."""
        n = len(self.curves["loss"])
        tail = max(1, n // 20)
        out = {c: float(sum(v[-tail:]) / len(v[-tail:])) if v else float("nan")
               for c, v in self.curves.items()}  # fmt: skip
        return {**out, "step": self.step, "tokens_seen": self.tokens_seen,
                "seconds": round(self.seconds, 2)}  # fmt: skip

    def to_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """``(tensors, meta)``: SAE weights, Adam moments and counters; JSON-safe metadata."""
        tensors, sae_meta = self.sae.to_state()
        tensors = {f"sae.{k}": v for k, v in tensors.items()}
        tensors["tokens_since_fired"] = self.tokens_since_fired.clone()
        groups = self.optimizer.get("param_groups", [])
        adam_scalars: dict[str, float] = {}
        for index, entry in self.optimizer.get("state", {}).items():
            for key, value in entry.items():
                if torch.is_tensor(value) and value.ndim > 0:
                    tensors[f"adam.{index}.{key}"] = value.detach().cpu().contiguous()
                else:
                    adam_scalars[f"{index}.{key}"] = float(value)
        meta = {
            "format": TRAIN_STATE_FORMAT,
            "sae": sae_meta,
            "options": asdict(self.options),
            "adam_param_groups": json.loads(json.dumps(groups, default=str)),
            "adam_scalars": adam_scalars,
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "sequences_read": self.sequences_read,
            "curves": self.curves,
            "seconds": self.seconds,
            "interrupted": self.interrupted,
        }
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], meta: dict[str, Any]) -> SAETrainState:
        """Rebuild from ``to_state`` output.

        Raises:
            OptionError: a wrong format or a missing field or tensor (named in the message).
        """
        if meta.get("format") != TRAIN_STATE_FORMAT:
            raise OptionError(
                f"train state field 'format' is {meta.get('format')!r}, expected "
                f"{TRAIN_STATE_FORMAT!r}"
            )
        for key in ("sae", "options", "step", "curves"):
            if key not in meta:
                raise OptionError(f"train state has no field {key!r}")
        sae = SparseAutoencoder.from_state(
            {k[4:]: v for k, v in tensors.items() if k.startswith("sae.")}, meta["sae"]
        )
        options = SAETrainOptions(**meta["options"])
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("adam."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        for key, value in meta.get("adam_scalars", {}).items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = torch.tensor(value)
        optimizer = {"state": state, "param_groups": meta.get("adam_param_groups", [])}
        if "tokens_since_fired" not in tensors:
            raise OptionError("train state has no tensor 'tokens_since_fired'")
        return cls(
            sae=sae, options=options, optimizer=optimizer, step=int(meta["step"]),
            tokens_seen=int(meta.get("tokens_seen", 0)),
            sequences_read=int(meta.get("sequences_read", 0)),
            tokens_since_fired=tensors["tokens_since_fired"].long(),
            curves={c: [float(x) for x in meta["curves"].get(c, [])] for c in CURVES},
            seconds=float(meta.get("seconds", 0.0)), interrupted=bool(meta.get("interrupted")),
        )  # fmt: skip


# -- the trainer ---------------------------------------------------------------------------------


def new_train_state(
    first_batches: list[Tensor], options: SAETrainOptions, *, hook_name: str = "",
    model_name: str = "",
) -> SAETrainState:  # fmt: skip
    """A fresh state: scale and ``b_dec`` estimated from ``first_batches`` (rows ``[n, d_in]``).

    Raises:
        OptionError: no rows, or rows with zero norm everywhere.
    """
    rows = torch.cat([b.float() for b in first_batches]) if first_batches else torch.empty(0)
    if rows.numel() == 0:
        raise OptionError("no activation rows to estimate the activation scale from")
    mean_sq = float(rows.pow(2).sum(-1).mean())
    if options.normalise and mean_sq <= 0:
        raise OptionError("every activation row is zero: nothing to train an SAE on")
    scale = mean_sq**-0.5 if options.normalise else 1.0
    cfg = SAEConfig(d_in=int(rows.shape[-1]), d_sae=options.d_sae,
                    architecture=options.architecture, k=options.k, activation_scale=scale,
                    hook_name=hook_name, model_name=model_name)  # fmt: skip
    sae = SparseAutoencoder(cfg, seed=options.seed)
    with torch.no_grad():
        sae.b_dec.copy_((rows * scale).mean(0))
    optimizer = torch.optim.Adam(sae.parameters(), lr=options.lr)
    return SAETrainState(sae, options, optimizer.state_dict(),
                         tokens_since_fired=torch.zeros(options.d_sae, dtype=torch.long))  # fmt: skip


def _lr_at(options: SAETrainOptions, step: int) -> float:
    decay_from = options.steps * (1 - options.lr_decay_fraction)
    if step < decay_from or options.lr_decay_fraction == 0:
        return options.lr
    return options.lr * max(0.0, (options.steps - step) / (options.steps - decay_from))


def _auxk_loss(sae: SparseAutoencoder, pre: Tensor, error: Tensor, dead: Tensor) -> Tensor:
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre.new_zeros(())
    k_aux = min(max(1, sae.cfg.d_in // 2), n_dead)
    masked = torch.where(dead, pre, torch.full_like(pre, -torch.inf))
    values, indices = masked.topk(k_aux, dim=-1, sorted=False)
    # No ReLU here: a latent whose pre-activations are all negative still gets a gradient.
    acts = torch.zeros_like(pre).scatter(-1, indices, values)
    recon = acts @ sae.W_dec
    return (recon - error.detach()).pow(2).sum(-1).mean()


@torch.no_grad()
def _resample(
    sae: SparseAutoencoder, optimizer: torch.optim.Optimizer, x: Tensor, x_hat: Tensor,
    dead: Tensor, gen: torch.Generator,
) -> int:  # fmt: skip
    """Point dead latents at badly reconstructed inputs; reset their Adam moments."""
    idx = dead.nonzero().flatten()
    if idx.numel() == 0:
        return 0
    error = x - x_hat
    weights = error.pow(2).sum(-1)
    if float(weights.sum()) <= 0:
        return 0
    picks = torch.multinomial(weights, idx.numel(), replacement=True, generator=gen)
    directions = error[picks]
    directions /= directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    alive = ~dead
    enc_norm = float(sae.W_enc[:, alive].norm(dim=0).mean()) if alive.any() else 1.0
    sae.W_dec[idx] = directions
    sae.W_enc[:, idx] = directions.T * 0.2 * enc_norm
    sae.b_enc[idx] = 0.0
    for param, sl in ((sae.W_dec, (idx,)), (sae.W_enc, (slice(None), idx)), (sae.b_enc, (idx,))):
        st = optimizer.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                st[key][sl] = 0.0
    return int(idx.numel())


def fit_sae(
    batches: Iterable[Tensor] | Iterator[tuple[Tensor, int]],
    options: SAETrainOptions | None = None,
    *,
    state: SAETrainState | None = None,
    hook_name: str = "",
    model_name: str = "",
    progress: Progress | None = None,
    progress_bar: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> SAETrainState:
    """Train (or continue training) an SAE on a stream of activation batches.

    Args:
        batches: ``[rows, d_in]`` tensors, or ``(rows, sequences_read)`` pairs from
            ``analysis.activations.activation_rows``. Raw (unscaled) activations.
        options: how to train (ignored when ``state`` is given: its options are used).
        state: a state to continue from (``SAETrainState.from_state``), else a fresh SAE.
        hook_name, model_name: recorded in the SAE's config.
        progress: called after every step with ``(step, steps, metrics)``.
        progress_bar: show a tqdm bar (notebooks, CLI).
        should_stop: polled every step; ``True`` stops early (the app's stop button).

    Returns:
        The state after ``options.steps`` steps, or earlier with ``interrupted=True`` when the
        stream ran out, ``should_stop`` said so or Ctrl-C was pressed.

    Raises:
        OptionError: rows of the wrong width, or no rows at all.

    Example:
        >>> data, truth = planted_features(seed=0)                       # doctest: +SKIP
        >>> st = fit_sae(data.split(256), SAETrainOptions(d_sae=128, k=3, steps=3000))
        >>> st.sae.W_dec.shape                                           # doctest: +SKIP
        torch.Size([128, 32])
    """
    stream = iter(batches)

    def next_rows() -> tuple[Tensor, int | None]:
        item = next(stream)
        return item if isinstance(item, tuple) else (item, None)

    if state is None:
        options = options or SAETrainOptions()
        first: list[tuple[Tensor, int | None]] = []
        for _ in range(options.norm_batches):
            try:
                first.append(next_rows())
            except StopIteration:
                break
        state = new_train_state([r for r, _ in first], options, hook_name=hook_name,
                                model_name=model_name)  # fmt: skip
        pending: Iterator[tuple[Tensor, int | None]] = chain(first, iter(next_rows, None))
    else:
        pending = iter(next_rows, None)
    options = state.options
    sae = state.sae
    optimizer = torch.optim.Adam(sae.parameters(), lr=options.lr)
    if state.optimizer.get("state"):
        optimizer.load_state_dict(state.optimizer)
    gen = torch.Generator().manual_seed(options.seed + state.step)
    method = options.dead_method
    scale = sae.cfg.activation_scale
    started = time.perf_counter()
    seconds0 = state.seconds
    bar = tqdm(total=options.steps, initial=state.step, desc="SAE", disable=not progress_bar,
               leave=False)  # fmt: skip
    state.interrupted = False
    try:
        while state.step < options.steps:
            if should_stop is not None and should_stop():
                state.interrupted = True
                break
            try:
                rows, read = next(pending)
            except StopIteration:
                state.interrupted = True
                break
            if rows.shape[-1] != sae.cfg.d_in:
                raise OptionError(
                    f"activation rows have width {rows.shape[-1]}; this SAE reads d_in={sae.cfg.d_in}"
                )
            x = rows.float() * scale
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(options, state.step)
            pre = sae.pre_acts(rows)
            f = sae.activate(pre)
            x_hat = sae.decode_scaled(f)
            mse = (x_hat - x).pow(2).sum(-1).mean()
            fired = (f > 0).any(0)
            state.tokens_since_fired += rows.shape[0]
            state.tokens_since_fired[fired] = 0
            dead = state.tokens_since_fired >= options.dead_window
            aux = x.new_zeros(())
            if options.architecture == "relu":
                loss = mse + options.l1_coefficient * f.sum(-1).mean()
            else:
                loss = mse
            if method == "auxk":
                aux = _auxk_loss(sae, pre, x - x_hat, dead)
                loss = loss + options.aux_coefficient * aux
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():  # no step along the rows' own direction
                w = sae.W_dec
                w.grad -= (w.grad * w).sum(-1, keepdim=True) * w
            optimizer.step()
            sae.normalise_decoder()
            state.step += 1
            state.tokens_seen += int(rows.shape[0])
            if read is not None:
                state.sequences_read = read
            resample_now = (method == "resample" and state.step % options.resample_every == 0
                            and state.step < 0.75 * options.steps)  # fmt: skip
            if resample_now and _resample(sae, optimizer, x, x_hat.detach(), dead, gen):
                state.tokens_since_fired[dead] = 0
            with torch.no_grad():
                total = (x - x.mean(0)).pow(2).sum()
                metrics = {
                    "loss": float(loss), "mse": float(mse),
                    "fve": float(1 - (x_hat - x).pow(2).sum() / total.clamp_min(1e-12)),
                    "l0": float((f > 0).float().sum(-1).mean()), "aux": float(aux),
                    "dead_fraction": float(dead.float().mean()),
                }  # fmt: skip
            for name in CURVES:
                state.curves[name].append(metrics[name])
            bar.update(1)
            if progress is not None:
                progress(state.step, options.steps, metrics)
    except KeyboardInterrupt:
        state.interrupted = True
    finally:
        bar.close()
        state.seconds = seconds0 + time.perf_counter() - started
        state.optimizer = optimizer.state_dict()
    return state


def train_sae(
    model: Any,
    tokens: Int[Tensor, "seq pos"],
    hook_name: str,
    options: SAETrainOptions | None = None,
    *,
    state: SAETrainState | None = None,
    progress: Progress | None = None,
    progress_bar: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> SAETrainState:
    """Train an SAE on one hook's activations, streamed from the model in bounded batches.

    Activations are read ``options.sequences_per_forward`` sequences at a time (the forward
    pass stops at the hook), shuffled in a bounded buffer, and cycled for more epochs when the
    steps need more rows than ``tokens`` holds. Position 0 (BOS) is left out.

    Args:
        model: the hooked model.
        tokens: ``[seq, pos]`` token windows (``analysis.activations.token_windows``, or task
            sequences of one length), BOS in column 0.
        hook_name: the hook to read (``analysis.hooks.resid_post(6)``).
        options: how to train (a fresh run); a resumed run uses ``state.options``.
        state: a saved state to continue from; the token stream resumes after the sequences it
            had read (rows left in the shuffle buffer when it stopped are skipped).
        progress, progress_bar, should_stop: as in ``fit_sae``.

    Returns:
        The training state (``state.sae`` is the SAE; ``state.summary()`` the last metrics).

    Raises:
        HookNotFoundError: a hook the model lacks.
        OptionError: bad options or tokens, or a state trained on another hook.

    Example:
        >>> tokens = token_windows(lm, load_corpus()[:200], 64)                    # doctest: +SKIP
        >>> st = train_sae(lm, tokens, resid_post(15), SAETrainOptions(steps=300))  # doctest: +SKIP
    """
    from analysis.protocol import model_name as name_of

    if state is not None and state.sae.cfg.hook_name not in ("", hook_name):
        raise OptionError(
            f"the saved state was trained on {state.sae.cfg.hook_name!r}, not {hook_name!r}"
        )
    opts = state.options if state is not None else (options or SAETrainOptions())
    stream = activation_rows(
        model, tokens, hook_name, rows_per_batch=opts.batch_size,
        sequences_per_forward=opts.sequences_per_forward, buffer_rows=opts.buffer_rows,
        start=state.sequences_read if state is not None else 0, seed=opts.seed + (state.step if state else 0),
    )  # fmt: skip
    if state is not None:
        start = state.sequences_read
        stream = ((rows, start + read) for rows, read in stream)
    return fit_sae(stream, opts, state=state, hook_name=hook_name, model_name=name_of(model),
                   progress=progress, progress_bar=progress_bar, should_stop=should_stop)  # fmt: skip


def with_steps(state: SAETrainState, steps: int) -> SAETrainState:
    """The same state with ``options.steps`` changed (to train a finished SAE further)."""
    return replace(state, options=replace(state.options, steps=steps))
