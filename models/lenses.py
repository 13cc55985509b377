"""Saved tuned lenses: ``lens.safetensors`` + ``meta.json`` per model and lens name.

Lenses live under ``cache_dir()/"lenses"/<model key>/<name>/``. The model key joins the model's
spec text, its backend and a short hash of a few of its weight tensors, so a retrained or
different model never picks up a stale lens, and the same model loaded again finds its lens.

Example:
    >>> lm = load_model("smollm2-135m")                                   # doctest: +SKIP
    >>> lens, _ = fit_tuned_lens(lm, split_corpus(load_corpus())[0])      # doctest: +SKIP
    >>> save_lens(lm, lens)                                               # doctest: +SKIP
    >>> TunedLens.from_state(*load_lens(lm)).fitted_by                    # doctest: +SKIP
    'ols'

``models`` does not import ``analysis``: a lens is handed over as its ``to_state()`` pair
(tensors + string metadata) and rebuilt by the caller with ``TunedLens.from_state``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.cache import atomic_folder, cache_dir
from models.errors import CheckpointError

LENS_FILE = "lens.safetensors"
META_FILE = "meta.json"
SCHEMA_VERSION = 1
#: ``analysis.tuned_lens.STATE_FORMAT`` (models and analysis do not import each other).
STATE_FORMAT = "mechscope-tuned-lens"

#: What ``TunedLens.to_state()`` returns and ``TunedLens.from_state`` takes.
LensState = tuple[dict[str, torch.Tensor], dict[str, str]]


def model_identity(model: Any) -> dict[str, str]:
    """What identifies a model for its lenses: spec text, backend and a weight fingerprint.

    The fingerprint hashes a strided sample of the first two and the last two parameters (in
    ``named_parameters`` order: embeddings, first block, final norm / unembedding), which is
    cheap on a 135M model and changes whenever the model is retrained.
    """
    inner = getattr(model, "model", model)
    spec = getattr(model, "spec", None)
    text = spec.text if spec is not None else str(getattr(model.cfg, "model_name", "model"))
    backend = getattr(model, "provenance", {}).get("backend") or type(inner).__name__
    params = list(inner.named_parameters())
    chosen = params[:2] + params[-2:] if len(params) > 4 else params
    digest = hashlib.sha256()
    for name, tensor in chosen:
        flat = tensor.detach().float().cpu().flatten()
        sample = flat[:: max(1, flat.numel() // 65536)].contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(sample.numpy().tobytes())
    return {"spec": text, "backend": str(backend), "weights_sha256": digest.hexdigest()[:16]}


def lens_dir(model: Any, name: str = "default") -> Path:
    """The folder a lens of this model is saved in (it may not exist)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name) or name.startswith("."):
        raise ValueError(f"lens name {name!r} must be 1-64 of letters, digits, '_', '.', '-'")
    ident = model_identity(model)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", ident["spec"]).strip("._")[-48:] or "model"
    key = f"{stem}-{ident['backend']}-{ident['weights_sha256']}"
    return cache_dir() / "lenses" / key / name


def save_lens(model: Any, lens: Any, name: str = "default") -> Path:
    """Save a lens for ``model`` atomically (a crash leaves the old lens or none).

    Args:
        model: the model the lens was fitted on.
        lens: a ``TunedLens`` (anything with ``to_state()``) or its ``(state, meta)`` pair.
        name: the lens' name among this model's lenses.

    Returns:
        The lens folder.

    Raises:
        CheckpointError: the lens does not match the model's ``d_model`` / ``n_layers``.
    """
    state, state_meta = lens.to_state() if hasattr(lens, "to_state") else lens
    _check_state(model, state, state_meta, f"lens {name!r}")
    meta = {"schema_version": SCHEMA_VERSION, "model": model_identity(model), "lens": state_meta}
    folder = lens_dir(model, name)
    with atomic_folder(folder) as tmp:
        save_file(state, str(tmp / LENS_FILE), metadata=state_meta)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return folder


def has_lens(model: Any, name: str = "default") -> bool:
    """Whether a saved lens of this name exists for this model."""
    folder = lens_dir(model, name)
    return (folder / LENS_FILE).is_file() and (folder / META_FILE).is_file()


def load_lens(model: Any, name: str = "default") -> LensState:
    """Load the lens saved for ``model`` under ``name``, checked against the model.

    Returns:
        ``(state, meta)`` for ``TunedLens.from_state``.

    Raises:
        CheckpointError: a missing lens, an unreadable or corrupt file, or a lens whose
            ``d_model`` / ``n_layers`` / tensor shapes do not match the model (the message names
            the file and the field).
    """
    folder = lens_dir(model, name)
    meta_path, lens_path = folder / META_FILE, folder / LENS_FILE
    if not meta_path.is_file() or not lens_path.is_file():
        raise CheckpointError(
            f"no lens {name!r} for this model: {folder} has no {META_FILE}/{LENS_FILE}"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("schema_version") != SCHEMA_VERSION:
        found = meta.get("schema_version") if isinstance(meta, dict) else meta
        raise CheckpointError(
            f"{meta_path}: field 'schema_version' is {found!r}, expected {SCHEMA_VERSION}"
        )
    lens_meta = meta.get("lens")
    if not isinstance(lens_meta, dict) or lens_meta.get("format") != STATE_FORMAT:
        raise CheckpointError(
            f"{meta_path}: field 'lens.format' is missing or not {STATE_FORMAT!r}"
        )
    try:
        state = load_file(str(lens_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{lens_path} is not a readable safetensors file (corrupt or truncated): {exc}"
        ) from exc
    lens_meta = {str(k): str(v) for k, v in lens_meta.items()}
    _check_state(model, state, lens_meta, str(meta_path))
    return state, lens_meta


def _check_state(
    model: Any, state: dict[str, torch.Tensor], meta: dict[str, str], where: str
) -> None:
    for key in ("d_model", "n_layers"):
        want = getattr(model.cfg, key)
        if str(meta.get(key)) != str(want):
            raise CheckpointError(
                f"{where}: field 'lens.{key}' is {meta.get(key)!r}; this model has {key}={want}"
            )
    d, n = model.cfg.d_model, model.cfg.n_layers
    for key, shape in (("weight", (n, d, d)), ("bias", (n, d))):
        if key not in state:
            raise CheckpointError(f"{where}: tensor {key!r} is missing")
        if tuple(state[key].shape) != shape:
            raise CheckpointError(
                f"{where}: tensor {key!r} has shape {tuple(state[key].shape)}, expected {shape}"
            )
        if not torch.isfinite(state[key]).all():
            raise CheckpointError(f"{where}: tensor {key!r} holds NaN or infinite values")
