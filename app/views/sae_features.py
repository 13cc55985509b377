"""Feature browser: pick a cached SAE and a latent; see its top-activating snippets, its
activation histogram and the tokens its decoder direction promotes or suppresses."""

from __future__ import annotations

import streamlit as st

from analysis.figures.sae import (
    feature_histogram_figure,
    feature_logits_figure,
    feature_snippets_figure,
)
from analysis.sae import SparseAutoencoder
from analysis.sae_features import FeatureActivations, feature_dashboard, run_feature_activations
from app.views.inputs import model_key
from app.views.sae_common import cached_sae_picker, hook_picker, sample_tokens
from models import LoadedModel

ORDERS = {"most frequent": "frequency", "strongest": "max_activation", "index": "latent"}


def _activations(
    model: LoadedModel, sae: SparseAutoencoder, n: int, seq_len: int
) -> FeatureActivations:
    """Corpus activations, kept per (model, SAE, data) in the session."""
    store = st.session_state.setdefault("sae.features.acts", {})
    key = (model_key(model), id(sae), n, seq_len)
    if key not in store:
        store.clear()  # one corpus encoding at a time: they can be large
        with st.spinner(f"Encoding {n} sequences with the SAE…"):
            store[key] = run_feature_activations(
                model, sae, sample_tokens(model, n, seq_len=seq_len)
            )
    return store[key]


def render(model: LoadedModel) -> None:
    """Draw the feature browser for ``model``."""
    st.header("SAE feature browser")
    st.caption("What one SAE latent fires on (top-activating snippets of the shipped corpus or "
               "of task inputs, aligned on the peak token), how strongly, and what it writes: "
               "the output tokens its decoder direction promotes and suppresses through W_U.")  # fmt: skip
    hook = hook_picker(model, "sae.feat")
    picked = cached_sae_picker(model, hook, "sae.feat")
    if picked is None:
        return
    sae, extra = picked
    c1, c2 = st.columns(2)
    n = int(c1.number_input("Sequences to scan", 1, 5000, 64 if model.codec is None else 400,
                            key=f"sae.feat.n.{model.name}"))  # fmt: skip
    seq_len = int(c2.number_input("Window (text)", 4, 1024, 64, key=f"sae.feat.len.{model.name}"))
    acts = _activations(model, sae, n, seq_len)
    frame = acts.to_frame()
    alive = int((frame["frequency"] > 0).sum())
    st.caption(f"{acts.n_tokens} tokens scanned; {alive} of {len(frame)} latents fire at least once."
               + (f" Held-out FVE {extra['eval']['fve']:.3f}, L0 {extra['eval']['l0']:.1f}."
                  if "eval" in extra else ""))  # fmt: skip
    o1, o2 = st.columns([1, 2])
    order = o1.selectbox("Order latents by", list(ORDERS), key="sae.feat.order")
    ranked = frame.sort_values(ORDERS[order], ascending=order == "index")
    choices = ranked["latent"].tolist()
    latent = o2.selectbox(
        "Latent", choices, key=f"sae.feat.latent.{model_key(model)}.{hook}",
        format_func=lambda i: f"{i}  (fires on {100 * frame.at[i, 'frequency']:.2f}%, "
        f"max {frame.at[i, 'max_activation']:.2f})",
    )  # fmt: skip
    dash = feature_dashboard(acts, model, sae, int(latent))
    st.plotly_chart(feature_snippets_figure(dash), width="stretch")
    left, right = st.columns(2)
    left.plotly_chart(feature_histogram_figure(dash), width="stretch")
    right.plotly_chart(feature_logits_figure(dash), width="stretch")
    with st.expander("Every latent"):
        st.dataframe(ranked, hide_index=True, width="stretch")
