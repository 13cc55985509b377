"""Concept tracing page: how many SAE concepts fire, per layer, as real input degrades to noise.

Uses one residual-stream SAE per layer from the user cache (SmolLM2: trained by
``bench/sae_layers.py``; task and RASP models: trained here in seconds).
"""

from __future__ import annotations

import streamlit as st

from analysis.concepts import ConceptTraceOptions, ConceptTraceResult, run_concept_trace
from analysis.figures.concepts import (
    concept_curves_figure,
    concept_grid_figure,
    concept_level_figure,
)
from analysis.sae_training import SAETrainOptions
from app.views.inputs import model_key
from app.views.sae_common import sample_tokens
from models import LoadedModel
from models.corpus import load_corpus, split_corpus
from probes.sae_layers import layer_sae_info, load_layer_saes, train_layer_saes

SET_NAME = "default"


def _missing_layers(model: LoadedModel) -> list[int]:
    cached = layer_sae_info(model, None, SET_NAME)
    return [layer for layer in range(model.cfg.n_layers) if layer not in cached]


def train_set(model: LoadedModel) -> None:
    """Train the missing per-layer SAEs with small settings, with a progress bar."""
    bar = st.progress(0.0, text="Reading activations…")

    def progress(stage: str, done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"{stage}: {done}/{total}")

    d = model.cfg.d_model
    options = SAETrainOptions(d_sae=4 * d, k=max(1, min(16, d // 4)), lr=3e-3, batch_size=256,
                              dead_window=20_000)  # fmt: skip
    if model.codec is None:
        train, held = split_corpus(load_corpus(), 0.2, seed=0)
        train_layer_saes(model, train, options, name=SET_NAME, max_tokens=20_000, epochs=2,
                         held_out_texts=held, progress=progress)  # fmt: skip
    else:
        tokens = sample_tokens(model, 1500)
        held = sample_tokens(model, 100, held_out=True)
        train_layer_saes(model, tokens, options, name=SET_NAME, max_tokens=12_000, epochs=3,
                         held_out_texts=held, progress=progress)  # fmt: skip
    bar.empty()


def show_trace(trace: ConceptTraceResult, key: str) -> None:
    """Level slider, per-layer bars, curves, the layer x level grid and noise-robust concepts."""
    growth = trace.growth()
    top = int(growth.argmax())
    st.success(f"Pure noise vs intact: concept counts change by ×{float(growth.min()):.2f} to "
               f"×{float(growth.max()):.2f} across layers (largest at L{trace.layers[top]}); "
               f"{len(trace.monotone_layers())}/{len(trace.layers)} layers grow monotonically "
               f"({trace.n_inputs} inputs per level).")  # fmt: skip
    label = st.select_slider("Uncertainty level", trace.level_labels, value=trace.level_labels[-1],
                             key=f"concepts.level.{key}")  # fmt: skip
    st.plotly_chart(concept_level_figure(trace, trace.level_labels.index(label)), width="stretch")
    left, right = st.columns(2)
    value = left.radio("Curves", ["count", "overlap"], horizontal=True, key="concepts.curve")
    left.plotly_chart(concept_curves_figure(trace, value), width="stretch")
    grid = right.radio("Grid", ["growth", "count", "overlap"], horizontal=True, key="concepts.grid")
    right.plotly_chart(concept_grid_figure(trace, grid), width="stretch")
    st.subheader("Noise-robust concepts")
    st.caption(f"Latents that fire on at least {100 * trace.options.robust_rate:.0f}% of "
               "pure-noise inputs, with how often they fire on intact inputs; open one in the "
               "SAE feature browser to see what it means.")  # fmt: skip
    st.dataframe(trace.robust_frame(), hide_index=True, width="stretch")
    with st.expander("Every layer and level"):
        st.dataframe(trace.to_frame(), hide_index=True, width="stretch")


def render(model: LoadedModel) -> None:
    """Draw the concept tracing page for ``model``."""
    st.header("Concept tracing under uncertainty")
    st.caption(
        "Real inputs are degraded step by step to pure noise, by shuffling n-grams (smaller n, "
        "less structure) or by replacing a growing share of tokens with random ones. At each "
        "level an input's concepts are the residual-stream SAE latents active anywhere in it "
        "(Suresh et al., 2025: counts grow with uncertainty, most in middle layers)."
    )
    missing = _missing_layers(model)
    if missing:
        st.info(f"{len(missing)} of {model.cfg.n_layers} layers have no cached SAE (set "
                f"'{SET_NAME}'). SmolLM2: run `python bench/sae_layers.py` (about half an hour "
                "on 2 CPU cores); small models train here in seconds.", icon=":material/info:")  # fmt: skip
        if st.button(
            "Train the missing SAEs", key="concepts.train", icon=":material/model_training:"
        ):
            train_set(model)
            st.rerun()
        return
    c1, c2, c3, c4 = st.columns(4)
    method = c1.radio("Degradation", ["shuffle", "replace"], horizontal=True, key="concepts.method")
    n = int(c2.number_input("Inputs", 1, 2000, 24 if model.codec is None else 200,
                            key=f"concepts.n.{model.name}"))  # fmt: skip
    seq_len = int(c3.number_input("Window (text)", 4, 512, 64, key=f"concepts.len.{model.name}"))
    threshold = float(c4.number_input("Activation threshold", 0.0, 100.0, 0.0, key="concepts.thr"))
    options = ConceptTraceOptions(method=method, threshold=threshold)
    traces = st.session_state.setdefault("concepts.traces", {})
    run_key = repr((model_key(model), options, n, seq_len))
    if st.button(
        "Trace concepts", type="primary", key="concepts.run", icon=":material/play_arrow:"
    ):
        saes = load_layer_saes(model, None, SET_NAME)
        tokens = sample_tokens(model, n, seq_len=seq_len, held_out=True)
        noise = None if model.codec is None else list(range(1, len(model.codec.vocab)))
        with st.spinner(f"Tracing {n} inputs x {len(options.resolved_levels())} levels…"):
            traces[run_key] = run_concept_trace(
                model, saes, tokens, options=options, noise_ids=noise
            )
    trace = traces.get(run_key)
    if trace is None:
        st.info("Press **Trace concepts**.", icon=":material/insights:")
    else:
        show_trace(trace, model_key(model))
