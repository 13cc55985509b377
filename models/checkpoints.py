"""Our checkpoints: ``model.safetensors`` + ``config.json`` (with a schema version) in a folder.

Nothing is ever unpickled: weights are read with safetensors, and a pickle offered as a
checkpoint is only opened with ``torch.load(weights_only=True)``, which refuses code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

from models.cache import atomic_folder
from models.errors import CheckpointError

SCHEMA_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

#: The HookedTransformerConfig fields stored in a checkpoint (all JSON-safe).
TL_CONFIG_FIELDS = (
    "n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_mlp", "d_vocab", "d_vocab_out",
    "act_fn", "attn_only", "normalization_type", "attention_dir", "positional_embedding_type",
    "original_architecture",
)  # fmt: skip


def tl_config_dict(cfg: HookedTransformerConfig) -> dict[str, Any]:
    """The JSON-safe part of a config that rebuilds the same architecture."""
    return {key: getattr(cfg, key) for key in TL_CONFIG_FIELDS}


def save_checkpoint(folder: Path, model: HookedTransformer, meta: dict[str, Any]) -> Path:
    """Write ``model`` and ``meta`` to ``folder`` atomically (a kill leaves no half checkpoint).

    Args:
        folder: the checkpoint folder to create or replace.
        model: the model; its state dict is saved as safetensors.
        meta: JSON-safe description (task, codec, training settings, metrics).

    Returns:
        ``folder``.
    """
    config = {"schema_version": SCHEMA_VERSION, "tl_config": tl_config_dict(model.cfg), **meta}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_folder(Path(folder)) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    return Path(folder)


def read_config(folder: Path) -> dict[str, Any]:
    """Read and check a checkpoint's ``config.json``.

    Raises:
        CheckpointError: missing or unparsable file, wrong schema version, missing field.
    """
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {folder} has no {CONFIG_FILE}")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(config).__name__}")
    version = config.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CheckpointError(
            f"{path}: field 'schema_version' is {version!r}; this mechscope reads {SCHEMA_VERSION}"
        )
    tl_config = config.get("tl_config")
    if not isinstance(tl_config, dict):
        raise CheckpointError(f"{path}: field 'tl_config' is missing or not an object")
    missing = [key for key in TL_CONFIG_FIELDS if key not in tl_config]
    if missing:
        raise CheckpointError(f"{path}: field 'tl_config' lacks {', '.join(missing)}")
    return config


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, or of a tensors-only pickle read with ``weights_only``.

    Raises:
        CheckpointError: a missing, truncated or corrupt file, or a pickle holding code/objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.suffix in (".pt", ".pth", ".bin", ".pkl", ".ckpt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"{path} is a pickle that is not plain tensors; refusing to unpickle it "
                f"(save weights as safetensors): {str(exc).splitlines()[0]}"
            ) from exc
        if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            raise CheckpointError(f"{path} does not hold a flat dict of tensors")
        return state
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file (corrupt or truncated): {exc}"
        ) from exc


def load_checkpoint(folder: Path) -> tuple[HookedTransformer, dict[str, Any]]:
    """Rebuild a model and its metadata from a checkpoint folder.

    Raises:
        CheckpointError: bad config, bad weights, or weights that do not fit the config
            (the message names the tensor and both shapes).

    Example:
        >>> model, meta = load_checkpoint(cache_dir() / "task" / "sort")   # doctest: +SKIP
    """
    folder = Path(folder)
    config = read_config(folder)
    state = read_weights(folder / WEIGHTS_FILE)
    try:
        cfg = HookedTransformerConfig(**config["tl_config"], device="cpu")
    except (TypeError, ValueError, AssertionError) as exc:
        raise CheckpointError(
            f"{folder / CONFIG_FILE}: field 'tl_config' is invalid: {exc}"
        ) from exc
    model = HookedTransformer(cfg, move_to_device=False)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{folder}: weights do not match tl_config; missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{folder}: tensor {key!r} has shape {tuple(tensor.shape)} but tl_config "
                f"needs {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state)
    model.eval()
    return model, config
