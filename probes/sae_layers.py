"""Batch job: one SAE per layer on a model's residual stream, trained and cached for reuse.

Concept tracing reads every layer, so every layer needs an SAE. On a CPU the model's forward
pass is the costly part, so the activations of all requested layers are read in *one* pass
(the pass stops after the deepest layer) and kept in memory as float16, then each layer's
SAE is trained on its own rows for ``epochs`` epochs. Each finished SAE is written to the user
cache (``models.saes.sae_dir``, SAELens format) with its evaluation; a layer already cached is
skipped and an interrupted one resumes from its saved training state, so a rerun after a
crash or Ctrl-C only redoes the activation pass.

Example:
    >>> lm = load_model("smollm2-135m")                                       # doctest: +SKIP
    >>> saes = train_layer_saes(lm, texts, SAETrainOptions(d_sae=1152, k=32))  # doctest: +SKIP
    >>> saes = load_layer_saes(lm)                                            # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from analysis.activations import capture, token_windows
from analysis.hooks import check_layers, resid_post
from analysis.sae import SparseAutoencoder
from analysis.sae_metrics import evaluate_sae, reconstruction_metrics
from analysis.sae_training import SAETrainOptions, SAETrainState, fit_sae
from models.errors import CheckpointError
from models.saes import (
    has_sae,
    has_train_state,
    load_sae,
    load_train_state,
    sae_dir,
    sae_extra,
    save_sae,
    save_train_state,
)

#: ``progress(stage, done, total)``: stage ``activations`` or ``layer <n>``.
Progress = Callable[[str, int, int], None]


def _epochs(rows: Tensor, batch: int, seed: int) -> Iterator[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(rows.shape[0], generator=gen)
        for i in range(0, rows.shape[0] - batch + 1, batch):
            yield rows[perm[i : i + batch]].float()


def read_layer_activations(
    model: Any, tokens: Tensor, layers: Sequence[int], *, sequences_per_forward: int = 8,
    progress: Progress | None = None, progress_bar: bool = False,
) -> dict[int, Tensor]:  # fmt: skip
    """``{layer: [rows, d_model] float16}`` residuals after each layer, non-BOS positions."""
    hooks = [resid_post(layer) for layer in layers]
    parts: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    n = tokens.shape[0]
    bar = tqdm(total=n, desc="activations", disable=not progress_bar, leave=False)
    for start in range(0, n, sequences_per_forward):
        acts = capture(model, tokens[start : start + sequences_per_forward], hooks)
        for layer, hook in zip(layers, hooks):
            a = acts[hook][:, 1:]
            parts[layer].append(a.reshape(-1, a.shape[-1]).half())
        bar.update(min(sequences_per_forward, n - start))
        if progress is not None:
            progress("activations", min(start + sequences_per_forward, n), n)
    bar.close()
    return {layer: torch.cat(p) for layer, p in parts.items()}


def train_layer_saes(
    model: Any,
    texts: Sequence[str] | Tensor,
    options: SAETrainOptions,
    *,
    layers: Sequence[int] | None = None,
    name: str = "default",
    seq_len: int = 128,
    max_tokens: int = 50_000,
    epochs: int = 2,
    held_out_texts: Sequence[str] | Tensor = (),
    ce_layers: Sequence[int] = (),
    progress: Progress | None = None,
    progress_bar: bool = False,
) -> dict[int, SparseAutoencoder]:
    """Train (or finish, or load) one residual-stream SAE per layer and cache each.

    Args:
        model: the hooked model.
        texts: training text (read as ``seq_len`` token windows up to ``max_tokens``), or a
            ``[seq, pos]`` token tensor (task inputs).
        options: SAE options; ``options.steps`` is replaced by ``epochs`` over the rows.
        layers: the layers (all when ``None``); SAEs read ``resid_post(layer)``.
        name: the SAE set's name in the cache.
        held_out_texts: texts (or token rows) for the evaluation stored with each SAE.
        ce_layers: layers whose evaluation also splices the SAE into the model (CE loss
            recovered: three extra forward passes over the held-out windows each).
        progress, progress_bar: progress callback / tqdm bars.

    Returns:
        ``{layer: SAE}``.
    """
    layers = check_layers(model, layers)
    todo = [layer for layer in layers if not has_sae(model, resid_post(layer), name)]
    out: dict[int, SparseAutoencoder] = {}
    if todo:
        if isinstance(texts, Tensor):  # task inputs: token rows already
            tokens = texts[: max(1, max_tokens // (texts.shape[1] - 1))]
            held = held_out_texts if isinstance(held_out_texts, Tensor) else None
        else:
            windows = max(1, max_tokens // (seq_len - 1))
            tokens = token_windows(model, texts, seq_len, max_windows=windows)
            held = (token_windows(model, held_out_texts, seq_len, max_windows=16)
                    if len(held_out_texts) else None)  # fmt: skip
        seq_len = tokens.shape[1]
        n_train = tokens.shape[0]
        started = time.perf_counter()
        # Held-out windows ride along in the same pass: their rows give FVE / L0 / dead.
        everything = tokens if held is None else torch.cat([tokens, held])
        acts = read_layer_activations(model, everything, todo, progress=progress,
                                      progress_bar=progress_bar)  # fmt: skip
        read_seconds = time.perf_counter() - started
        split = n_train * (seq_len - 1)
        for layer in todo:
            hook = resid_post(layer)
            folder = sae_dir(model, hook, name)
            rows, held_rows = acts[layer][:split], acts[layer][split:]
            steps = max(1, epochs * rows.shape[0] // options.batch_size)
            opts = SAETrainOptions(**{**asdict(options), "steps": steps})
            state = None
            if has_train_state(folder):
                try:
                    state = SAETrainState.from_state(*load_train_state(folder))
                except Exception:  # a stale or foreign state: start again
                    state = None
            stage = f"layer {layer}"
            state = fit_sae(
                _epochs(rows, opts.batch_size, opts.seed + (state.step if state else 0)), opts,
                state=state, hook_name=hook, model_name=str(getattr(model, "name", "")),
                progress=(lambda s, t, m, stage=stage: progress(stage, s, t)) if progress else None,
                progress_bar=progress_bar,
            )  # fmt: skip
            save_train_state(folder, state.to_state())
            if not state.done:
                raise KeyboardInterrupt(f"SAE training of layer {layer} stopped at {state.step}")
            extra: dict[str, Any] = {"train": state.summary(), "tokens": int(rows.shape[0]),
                                     "activation_read_seconds": round(read_seconds, 1),
                                     "options": asdict(opts)}  # fmt: skip
            if held is not None:
                extra["eval"] = reconstruction_metrics(state.sae, held_rows)
                if layer in ce_layers:
                    metrics = evaluate_sae(model, state.sae, held[:8], hook_name=hook)
                    extra["eval"].update({k: v for k, v in metrics.to_dict().items()
                                          if k.startswith("ce_")})  # fmt: skip
            save_sae(folder, state.sae.to_state(), extra=extra)
            out[layer] = state.sae
    for layer in layers:
        if layer not in out:
            out[layer] = SparseAutoencoder.from_state(
                *load_sae(sae_dir(model, resid_post(layer), name))
            )
    return out


def load_layer_saes(
    model: Any, layers: Sequence[int] | None = None, name: str = "default"
) -> dict[int, SparseAutoencoder]:
    """The cached per-layer SAEs of ``model``.

    Raises:
        CheckpointError: a layer without a cached SAE (the message says how to train one).
    """
    layers = check_layers(model, layers)
    missing = [layer for layer in layers if not has_sae(model, resid_post(layer), name)]
    if missing:
        raise CheckpointError(
            f"no cached SAE set {name!r} for layers {missing[:8]} of this model; train them "
            "with probes.sae_layers.train_layer_saes (or the SAE training page)"
        )
    return {layer: SparseAutoencoder.from_state(*load_sae(sae_dir(model, resid_post(layer), name)))
            for layer in layers}  # fmt: skip


def layer_sae_info(
    model: Any, layers: Sequence[int] | None = None, name: str = "default"
) -> dict[int, dict]:
    """The training summary and evaluation stored with each cached SAE (``{}`` if none)."""
    layers = check_layers(model, layers)
    return {layer: sae_extra(sae_dir(model, resid_post(layer), name)) for layer in layers
            if has_sae(model, resid_post(layer), name)}  # fmt: skip
