"""Activations from chosen hooks, read in bounded batches, with the forward pass cut short.

``capture`` runs the model with a forward hook on each requested hook point only, and stops the
forward pass as soon as the deepest of them has fired (an exception raised from the hook), so
layers after it are never computed: the hook-name-agnostic form of ``stop_at_layer`` that works
on ``HookedTransformer`` and ``TransformerBridge`` alike. ``activation_rows`` streams rows of one
hook's activations through a bounded shuffle buffer for SAE training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from analysis.errors import OptionError
from analysis.hooks import require_hooks
from analysis.protocol import tokens_of


class _Captured(Exception):
    """Raised from the last hook to end the forward pass early."""


@torch.inference_mode()
def capture(
    model: Any, tokens: Int[Tensor, "batch pos"], hook_names: Sequence[str]
) -> dict[str, Float[Tensor, "batch pos ..."]]:
    """The activations of ``hook_names`` on ``tokens``; later layers are not computed.

    Args:
        model: a hooked model (``LoadedModel``, ``HookedTransformer`` or ``TransformerBridge``).
        tokens: ``[batch, pos]`` ids.
        hook_names: TransformerLens hook names (``analysis.hooks``).

    Returns:
        ``{name: activation}`` detached float32 CPU tensors.

    Raises:
        HookNotFoundError: a name the model does not have.

    Example:
        >>> capture(lm, lm.to_tokens("Hi"), [resid_post(3)])[resid_post(3)].shape  # doctest: +SKIP
        torch.Size([1, 2, 576])
    """
    names = list(dict.fromkeys(hook_names))
    require_hooks(model, names)
    store: dict[str, Tensor] = {}

    def hook_for(name: str):
        # Keyed by the requested name: a TransformerBridge reports its own alias in hook.name.
        def hook(act: Tensor, hook: Any) -> None:
            store[name] = act.detach().float().cpu().clone()
            if len(store) == len(names):
                raise _Captured

        return hook

    hooks = [(name, hook_for(name)) for name in names]
    with model.hooks(fwd_hooks=hooks), contextlib.suppress(_Captured):
        model(tokens)
    missing = [n for n in names if n not in store]
    if missing:  # a hook point that exists but did not fire on this forward pass
        raise OptionError(f"hook {missing[0]!r} did not fire on a forward pass of this model")
    return store


def token_windows(
    model: Any, texts: Sequence[str], seq_len: int, *, max_windows: int | None = None
) -> Int[Tensor, "window seq_len"]:
    """Texts tokenized, concatenated and cut into equal windows, each starting with BOS.

    Equal lengths mean no padding anywhere. The BOS id is the model's own first token.

    Args:
        model: a text model (``to_tokens`` prepends BOS).
        texts: the texts, in order.
        seq_len: window length including BOS (>= 2).
        max_windows: stop after this many windows.

    Raises:
        OptionError: ``seq_len < 2`` or texts too short to fill one window.

    Example:
        >>> token_windows(lm, load_corpus()[:50], 64).shape   # doctest: +SKIP
        torch.Size([93, 64])
    """
    if seq_len < 2:
        raise OptionError(f"seq_len must be at least 2, got {seq_len}")
    rows: list[Tensor] = []
    pending: list[Tensor] = []
    size, bos = 0, None
    for text in texts:
        ids = tokens_of(model, text)[0]
        bos = ids[:1] if bos is None else bos
        pending.append(ids[1:])
        size += int(ids.shape[0]) - 1
        while size >= seq_len - 1:
            flat = torch.cat(pending)
            rows.append(torch.cat([bos, flat[: seq_len - 1]]))
            pending, size = [flat[seq_len - 1 :]], int(flat.shape[0]) - (seq_len - 1)
            if max_windows is not None and len(rows) >= max_windows:
                return torch.stack(rows)
    if not rows:
        raise OptionError(
            f"the {len(texts)} texts hold {size} tokens; one window of {seq_len} needs {seq_len - 1}"
        )
    return torch.stack(rows)


def activation_rows(
    model: Any,
    tokens: Int[Tensor, "seq pos"],
    hook_name: str,
    *,
    rows_per_batch: int,
    sequences_per_forward: int = 8,
    buffer_rows: int | None = None,
    skip_bos: bool = True,
    start: int = 0,
    cycle: bool = True,
    seed: int = 0,
) -> Iterator[tuple[Float[Tensor, "row d"], int]]:
    """Shuffled batches of one hook's activations, read a few sequences at a time.

    At most ``buffer_rows`` rows are held: the buffer is filled by forward passes over
    ``sequences_per_forward`` sequences, shuffled, and drained to half before it is refilled,
    so consecutive batches mix tokens of many sequences.

    Args:
        model: the hooked model.
        tokens: ``[seq, pos]`` ids (e.g. ``token_windows``), BOS in column 0.
        hook_name: the hook to read (its activation is ``[batch, pos, d]``).
        rows_per_batch: rows per yielded batch.
        sequences_per_forward: sequences per forward pass.
        buffer_rows: shuffle buffer size (default: 8 batches).
        skip_bos: leave out position 0 (BOS activations are outliers an SAE should not fit).
        start: the first sequence to read (to resume).
        cycle: start again at sequence 0 after the last one (epochs); else stop.
        seed: seed of the shuffle.

    Yields:
        ``(rows, sequences_read)``: a ``[rows_per_batch, d]`` batch and how many sequences
        (counted over epochs, from ``start``) have entered the buffer so far.

    Raises:
        OptionError: empty tokens, or sizes < 1.
    """
    n = int(tokens.shape[0])
    if n < 1 or tokens.shape[-1] < (2 if skip_bos else 1):
        raise OptionError(f"no token positions to read: tokens have shape {tuple(tokens.shape)}")
    if rows_per_batch < 1 or sequences_per_forward < 1:
        raise OptionError(
            f"rows_per_batch and sequences_per_forward must be >= 1, got {rows_per_batch}, "
            f"{sequences_per_forward}"
        )
    capacity = max(buffer_rows or 8 * rows_per_batch, 2 * rows_per_batch)
    gen = torch.Generator().manual_seed(seed)
    buffer = torch.empty(0)
    read = start
    exhausted = False
    while True:
        while not exhausted and buffer.shape[0] < capacity:
            if not cycle and read >= n:
                exhausted = True
                break
            if cycle:
                idx = torch.arange(read, read + sequences_per_forward) % n
            else:
                idx = torch.arange(read, min(read + sequences_per_forward, n))
            acts = capture(model, tokens[idx], [hook_name])[hook_name]
            acts = acts[:, 1:] if skip_bos else acts
            fresh = acts.reshape(-1, acts.shape[-1])
            buffer = fresh if buffer.numel() == 0 else torch.cat([buffer, fresh])
            read += int(idx.shape[0])
        if buffer.shape[0] == 0:
            return
        buffer = buffer[torch.randperm(buffer.shape[0], generator=gen)]
        keep = capacity // 2 if not exhausted else 0
        while buffer.shape[0] > keep and buffer.shape[0] >= rows_per_batch:
            yield buffer[:rows_per_batch], read - start
            buffer = buffer[rows_per_batch:]
        if exhausted:
            if buffer.shape[0] > 0:
                yield buffer, read - start
            return
