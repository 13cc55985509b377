"""Shared pieces of the SAE pages: the token data an SAE reads, and picking a cached SAE.

Task and RASP models read equal-length random inputs of their own vocabulary; text models read
token windows of the shipped corpus (train / held-out split by ``split_corpus``).
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from analysis.activations import token_windows
from analysis.hooks import attn_out, mlp_out, resid_post, resid_pre
from analysis.sae import SparseAutoencoder
from app.views.inputs import model_key
from models import LoadedModel
from models.corpus import load_corpus, split_corpus
from models.saes import cached_sae_names, load_sae, sae_dir, sae_extra

SITES = {"resid_post": resid_post, "resid_pre": resid_pre, "mlp_out": mlp_out,
         "attn_out": attn_out}  # fmt: skip


def sample_tokens(model: LoadedModel, n: int, *, seq_len: int = 64, held_out: bool = False,
                  seed: int = 0) -> torch.Tensor:  # fmt: skip
    """``[n, pos]`` token rows: task inputs of one length, or corpus windows of ``seq_len``."""
    if model.codec is None:
        train, held = split_corpus(load_corpus(), 0.2, seed=0)
        return token_windows(model, held if held_out else train, seq_len, max_windows=n)
    rng = np.random.default_rng(seed + (10_000 if held_out else 0))
    length = model.codec.max_len
    values = list(model.codec.input_values)
    if model.kind == "task":
        from models.tasks import get_task

        task = get_task(model.provenance.get("task", model.spec.name))
        length = max(task.lengths)
        seqs = task.sample(n, rng, length=length)
    elif model.spec.name == "sort_unique":
        seqs = [[values[i] for i in rng.permutation(len(values))[:length]] for _ in range(n)]
    else:
        seqs = [
            [values[int(i)] for i in rng.integers(0, len(values), size=length)] for _ in range(n)
        ]
    return model.codec.to_tokens(seqs)


def hook_picker(model: LoadedModel, key: str) -> str:
    """Layer and site widgets; returns the hook name."""
    c1, c2 = st.columns(2)
    n = model.cfg.n_layers
    layer = c1.number_input("Layer", 0, n - 1, n // 2, key=f"{key}.layer.{model.name}")
    site = c2.selectbox("Site", list(SITES), key=f"{key}.site", help="Where the SAE reads: the "
                        "residual stream after / before a block, or a sub-layer's output")  # fmt: skip
    return SITES[site](int(layer))


@st.cache_resource(show_spinner=False, max_entries=16)
def _load_cached_sae(folder: str, stamp: float) -> SparseAutoencoder:
    return SparseAutoencoder.from_state(*load_sae(folder))


def cached_sae_picker(
    model: LoadedModel, hook: str, key: str
) -> tuple[SparseAutoencoder, dict] | None:
    """A select box over the SAEs cached for ``hook``; ``None`` (with a hint) when there are none."""
    names = cached_sae_names(model, hook)
    if not names:
        st.info(f"No SAE is cached for {hook} of this model yet: train one on the **SAE "
                "training** page (it is saved in the user cache).", icon=":material/info:")  # fmt: skip
        return None
    name = st.selectbox("Cached SAE", names, key=f"{key}.sae.{model_key(model)}.{hook}")
    folder = sae_dir(model, hook, name)
    stamp = (folder / "sae_weights.safetensors").stat().st_mtime
    return _load_cached_sae(str(folder), stamp), sae_extra(folder)
