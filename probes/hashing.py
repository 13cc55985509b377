"""Content hashes: a model's weights, a suite's inputs, and the key of one result cell.

A cell key is the SHA-256 of everything that determines a cell's result: the model's identity
(spec, backend and a hash of *every* parameter tensor), the suite and its version, the exact
inputs the suite built (token ids, targets, labels), the options, and the mechscope version.
Change any of them and the key changes, so the store never serves a stale result.

Example:
    >>> fingerprint([1, 2], "a") == fingerprint([1, 2], "a")
    True
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, is_dataclass
from functools import cache
from typing import Any

import numpy as np
import torch


@cache
def mechscope_version() -> str:
    """The installed mechscope version (``0+unknown`` when run from a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mechscope")
    except PackageNotFoundError:
        return "0+unknown"


def _update(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"tensor{tuple(t.shape)}{t.dtype}".encode())
        # bfloat16 has no numpy dtype: hash its bits as int16.
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        digest.update(raw.numpy().tobytes())
    elif isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        digest.update(f"array{a.shape}{a.dtype}".encode())
        digest.update(a.tobytes())
    elif isinstance(value, dict):
        digest.update(b"{")
        for key in sorted(value, key=str):
            _update(digest, str(key))
            _update(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            _update(digest, item)
        digest.update(b"]")
    elif is_dataclass(value) and not isinstance(value, type):
        _update(digest, {"__type__": type(value).__name__, **asdict(value)})
    else:
        digest.update(json.dumps(value, default=repr).encode())
        digest.update(b";")


def fingerprint(*parts: Any) -> str:
    """SHA-256 (hex) of nested tensors, arrays, dicts, lists, dataclasses and JSON scalars.

    Example:
        >>> fingerprint(torch.tensor([1, 2])) != fingerprint(torch.tensor([1, 3]))
        True
    """
    digest = hashlib.sha256()
    for part in parts:
        _update(digest, part)
    return digest.hexdigest()


def weights_hash(model: Any) -> str:
    """SHA-256 of every parameter of the hooked model (names, shapes, dtypes and values).

    Hashes the full tensors, not a sample: about 0.7 s for SmolLM2-135M on one CPU core.
    """
    inner = getattr(model, "model", model)
    digest = hashlib.sha256()
    for name, param in inner.named_parameters():
        digest.update(name.encode())
        _update(digest, param)
    return digest.hexdigest()


def model_identity(model: Any) -> dict[str, str]:
    """What identifies a loaded model in cell keys and provenance.

    Returns:
        ``{"spec", "kind", "backend", "weights_sha256", "n_params"}`` (strings).
    """
    inner = getattr(model, "model", model)
    spec = getattr(model, "spec", None)
    provenance = getattr(model, "provenance", {}) or {}
    return {
        "spec": spec.text if spec is not None else str(getattr(model.cfg, "model_name", "model")),
        "kind": str(getattr(model, "kind", "model")),
        "backend": str(provenance.get("backend") or type(inner).__name__),
        "weights_sha256": weights_hash(model),
        "n_params": str(sum(p.numel() for p in inner.parameters())),
    }


def cell_key(
    identity: dict[str, str],
    suite: str,
    suite_version: int,
    inputs_fingerprint: str,
    options: Any,
    device: str = "cpu",
) -> str:
    """The content key of one (model, suite, inputs, options) cell.

    ``n_params`` is left out (the weights hash covers it); the device is in, since a GPU run
    does not give bit-identical numbers.
    """
    return fingerprint(
        {
            "model": {k: identity[k] for k in ("spec", "backend", "weights_sha256")},
            "suite": suite,
            "suite_version": suite_version,
            "inputs": inputs_fingerprint,
            "options": options,
            "device": device,
            "mechscope": mechscope_version(),
        }
    )
