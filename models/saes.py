"""SAEs on disk, in SAELens' format: ``cfg.json`` + ``sae_weights.safetensors``.

A folder written here loads in SAELens 6.x (``SAE.load_from_disk``) and gives the same outputs
as in mechscope; a folder SAELens wrote (``standard`` / ``topk`` architectures) loads here.
mechscope's activation scale ``s`` is folded into the weights as SAELens' own trainer folds
its normalisation (``W_enc * s``, ``W_dec / s``, ``b_dec / s``) and recorded under
``metadata.mechscope`` so that mechscope unfolds it again on load. SAELens' options that
change the maths (``apply_b_dec_to_input = false``, ``rescale_acts_by_decoder_norm``) are
folded into the weights on load; ``normalize_activations`` other than ``none`` and
``hook_z`` reshaping are refused with a message.

Training states (to resume) sit beside the SAE in ``train_state/``; SAEs we train are cached
under ``cache_dir()/"saes"/<model key>/<hook>/<name>/`` (never shipped).

``models`` does not import ``analysis``: an SAE is handed over as
``SparseAutoencoder.to_state()`` (tensors + JSON-safe meta) and comes back the same way.

Example:
    >>> folder = save_sae(tmp_path, sae.to_state())                       # doctest: +SKIP
    >>> SparseAutoencoder.from_state(*load_sae(folder))                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.cache import atomic_folder, cache_dir
from models.errors import CheckpointError
from models.lenses import model_identity

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
TRAIN_STATE_DIR = "train_state"
STATE_TENSORS = "state.safetensors"
STATE_META = "state.json"
#: ``analysis.sae.STATE_FORMAT`` / ``STATE_VERSION`` (models and analysis do not import each other).
SAE_FORMAT, SAE_VERSION = "mechscope-sae", 1
#: SAELens version our ``cfg.json`` claims to be written for (its 6.x loader reads it as is).
SAELENS_FORMAT_VERSION = "6.54.12"
_ARCH_TO_SAELENS = {"relu": "standard", "topk": "topk"}
_SAELENS_TO_ARCH = {v: k for k, v in _ARCH_TO_SAELENS.items()}
PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")

#: What ``SparseAutoencoder.to_state()`` returns and ``from_state`` takes.
SAEState = tuple[dict[str, torch.Tensor], dict[str, Any]]


def save_sae(
    folder: str | Path, sae_state: SAEState, *, extra: dict[str, Any] | None = None
) -> Path:
    """Write an SAE in SAELens' format, atomically (a crash leaves the old folder or none).

    Args:
        folder: the target folder (replaced if it exists).
        sae_state: ``SparseAutoencoder.to_state()``.
        extra: more JSON-safe metadata (training summary, metrics) under ``metadata.mechscope``.

    Returns:
        The folder.

    Raises:
        CheckpointError: a state that is not a mechscope SAE or has missing tensors.
    """
    tensors, meta = sae_state
    if meta.get("format") != SAE_FORMAT or meta.get("version") != SAE_VERSION:
        raise CheckpointError(f"not a mechscope SAE state: format {meta.get('format')!r}")
    cfg = dict(meta["config"])
    for name in PARAMS:
        if name not in tensors:
            raise CheckpointError(f"SAE state has no tensor {name!r}")
    s = float(cfg.get("activation_scale", 1.0))
    folded = {
        "W_enc": tensors["W_enc"].float() * s,
        "b_enc": tensors["b_enc"].float(),
        "W_dec": tensors["W_dec"].float() / s,
        "b_dec": tensors["b_dec"].float() / s,
    }
    arch = _ARCH_TO_SAELENS[cfg.get("architecture", "topk")]
    saelens_cfg: dict[str, Any] = {
        "d_in": int(cfg["d_in"]),
        "d_sae": int(cfg["d_sae"]),
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": SAELENS_FORMAT_VERSION,
            "sae_lens_training_version": SAELENS_FORMAT_VERSION,
            "model_name": cfg.get("model_name", ""),
            "hook_name": cfg.get("hook_name", ""),
            "prepend_bos": True,
            "mechscope": {"config": cfg, "schema_version": SAE_VERSION, **(extra or {})},
        },
        "architecture": arch,
    }
    if arch == "topk":
        saelens_cfg["k"] = int(cfg["k"])
        saelens_cfg["rescale_acts_by_decoder_norm"] = False
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        if (folder / TRAIN_STATE_DIR).is_dir():  # keep a saved training state beside the SAE
            shutil.copytree(folder / TRAIN_STATE_DIR, tmp / TRAIN_STATE_DIR)
        save_file({k: v.contiguous() for k, v in folded.items()}, str(tmp / WEIGHTS_FILE))
        (tmp / CFG_FILE).write_text(json.dumps(saelens_cfg, indent=2))
    return folder


def load_sae(folder: str | Path) -> SAEState:
    """Read an SAE folder in SAELens' format (ours or SAELens' own).

    Returns:
        ``(tensors, meta)`` for ``SparseAutoencoder.from_state``.

    Raises:
        CheckpointError: a missing or corrupt file, an architecture other than ``standard`` /
            ``topk``, a normalisation or reshaping we do not apply, or tensor shapes that do
            not match ``d_in`` / ``d_sae`` (the message names the file and the field).
    """
    folder = Path(folder)
    cfg_path, weights_path = folder / CFG_FILE, folder / WEIGHTS_FILE
    if not cfg_path.is_file() or not weights_path.is_file():
        raise CheckpointError(
            f"{folder} is not an SAE folder: it needs {CFG_FILE} and {WEIGHTS_FILE}"
        )
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {exc}") from exc
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}")
    arch = cfg.get("architecture", "standard")
    if arch not in _SAELENS_TO_ARCH:
        raise CheckpointError(
            f"{cfg_path}: field 'architecture' is {arch!r}; mechscope reads "
            f"{', '.join(_SAELENS_TO_ARCH)}"
        )
    for key, ok in (("normalize_activations", "none"), ("reshape_activations", "none")):
        if cfg.get(key, ok) != ok:
            raise CheckpointError(
                f"{cfg_path}: field {key!r} is {cfg.get(key)!r}; mechscope reads only {ok!r} "
                "(fold the normalisation into the weights first)"
            )
    try:
        d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{cfg_path}: field 'd_in'/'d_sae' is missing or invalid") from exc
    try:
        raw = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{weights_path} is not a readable safetensors file (corrupt or truncated): {exc}"
        ) from exc
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    for name, shape in shapes.items():
        if name not in raw:
            raise CheckpointError(f"{weights_path}: tensor {name!r} is missing")
        if tuple(raw[name].shape) != shape:
            raise CheckpointError(
                f"{weights_path}: tensor {name!r} has shape {tuple(raw[name].shape)}, expected {shape}"
            )
        if not torch.isfinite(raw[name]).all():
            raise CheckpointError(f"{weights_path}: tensor {name!r} holds NaN or infinite values")
    w = {k: raw[k].float() for k in PARAMS}
    if not cfg.get("apply_b_dec_to_input", True):
        # x @ W_enc + b_enc == (x - b_dec) @ W_enc + (b_enc + b_dec @ W_enc)
        w["b_enc"] = w["b_enc"] + w["b_dec"] @ w["W_enc"]
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
        norms = w["W_dec"].norm(dim=-1).clamp_min(1e-8)
        w["W_enc"], w["b_enc"], w["W_dec"] = (
            w["W_enc"] * norms,
            w["b_enc"] * norms,
            w["W_dec"] / norms[:, None],
        )
    metadata = cfg.get("metadata") or {}
    ours = metadata.get("mechscope") if isinstance(metadata, dict) else None
    config = dict(ours["config"]) if isinstance(ours, dict) and "config" in ours else {}
    s = float(config.get("activation_scale", 1.0))
    w = {
        "W_enc": w["W_enc"] / s,
        "b_enc": w["b_enc"],
        "W_dec": w["W_dec"] * s,
        "b_dec": w["b_dec"] * s,
    }
    config.update(d_in=d_in, d_sae=d_sae, architecture=_SAELENS_TO_ARCH[arch],
                  activation_scale=s)  # fmt: skip
    if arch == "topk":
        config["k"] = int(cfg.get("k", config.get("k", 1)))
    else:
        config.setdefault("k", 1)
    if isinstance(metadata, dict):
        config.setdefault("hook_name", metadata.get("hook_name") or "")
        config.setdefault("model_name", metadata.get("model_name") or "")
    return w, {"format": SAE_FORMAT, "version": SAE_VERSION, "config": config}


def sae_extra(folder: str | Path) -> dict[str, Any]:
    """The extra metadata ``save_sae`` stored (``{}`` for a folder SAELens wrote)."""
    try:
        cfg = json.loads((Path(folder) / CFG_FILE).read_text(encoding="utf-8"))
        ours = dict(cfg.get("metadata", {}).get("mechscope") or {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}
    ours.pop("config", None)
    ours.pop("schema_version", None)
    return ours


# -- training states ---------------------------------------------------------------------------


def save_train_state(
    folder: str | Path, state: tuple[dict[str, torch.Tensor], dict[str, Any]]
) -> Path:
    """Write ``SAETrainState.to_state()`` atomically under ``folder/train_state``."""
    tensors, meta = state
    target = Path(folder) / TRAIN_STATE_DIR
    with atomic_folder(target) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / STATE_TENSORS))
        (tmp / STATE_META).write_text(json.dumps(meta))
    return target


def has_train_state(folder: str | Path) -> bool:
    """Whether ``folder`` holds a saved training state."""
    target = Path(folder) / TRAIN_STATE_DIR
    return (target / STATE_TENSORS).is_file() and (target / STATE_META).is_file()


def load_train_state(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a training state saved by ``save_train_state`` (for ``SAETrainState.from_state``).

    Raises:
        CheckpointError: a missing, corrupt or non-JSON file (named in the message).
    """
    target = Path(folder) / TRAIN_STATE_DIR
    if not has_train_state(folder):
        raise CheckpointError(f"no saved SAE training state in {target}")
    try:
        meta = json.loads((target / STATE_META).read_text(encoding="utf-8"))
        tensors = load_file(str(target / STATE_TENSORS), device="cpu")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{target / STATE_META} is not valid JSON: {exc}") from exc
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{target / STATE_TENSORS} is not readable: {exc}") from exc
    return tensors, meta


# -- the cache of trained SAEs ------------------------------------------------------------------


def sae_dir(model: Any, hook_name: str, name: str = "default") -> Path:
    """Where the SAE ``name`` of ``model`` at ``hook_name`` is cached (it may not exist).

    Raises:
        ValueError: a name that is not 1-64 letters, digits, ``_ . -``.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name) or name.startswith("."):
        raise ValueError(f"SAE name {name!r} must be 1-64 of letters, digits, '_', '.', '-'")
    ident = model_identity(model)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", ident["spec"]).strip("._")[-48:] or "model"
    hook = re.sub(r"[^A-Za-z0-9_.-]+", "_", hook_name).strip("._") or "hook"
    return (
        cache_dir() / "saes" / f"{stem}-{ident['backend']}-{ident['weights_sha256']}" / hook / name
    )


def has_sae(model: Any, hook_name: str, name: str = "default") -> bool:
    """Whether a trained SAE is cached for this model, hook and name."""
    folder = sae_dir(model, hook_name, name)
    return (folder / CFG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def cached_sae_names(model: Any, hook_name: str) -> list[str]:
    """Names of the SAEs cached for this model and hook."""
    parent = sae_dir(model, hook_name).parent
    if not parent.is_dir():
        return []
    return sorted(p.name for p in parent.iterdir() if (p / CFG_FILE).is_file())
