"""Lens page: what each layer would predict (logit lens or a fitted tuned lens), and the FFN
sub-updates behind a layer's prediction.
"""

from __future__ import annotations

import random

import streamlit as st

from analysis.errors import OptionError
from analysis.ffn import FfnUpdatesResult, run_ffn_updates
from analysis.figures import lens_curve_figure, lens_grid_figure
from analysis.lens import LensResult, run_logit_lens
from analysis.tuned_lens import TunedLens, TunedLensOptions, fit_tuned_lens, run_tuned_lens
from app.views.inputs import freeze, model_key, prompt_input, unfreeze
from models import LoadedModel
from models.corpus import load_corpus, split_corpus
from models.lenses import has_lens, load_lens, save_lens

COLOURS = {"top-1 probability": "top1_prob", "target probability": "target_prob",
           "entropy": "entropy", "KL to final": "kl_to_final"}  # fmt: skip
#: Tokens used when fitting a tuned lens from the page (OLS, closed form).
FIT_TOKENS = {"pretrained": 4_000, "other": 4_000}


@st.cache_data(show_spinner="Running the logit lens…", max_entries=32)
def cached_logit_lens(
    _model: LoadedModel, key: str, inputs: str | tuple, target: str | None, k: int
) -> LensResult:
    return run_logit_lens(_model, unfreeze(inputs), target=target, k=k)


@st.cache_data(show_spinner="Running the tuned lens…", max_entries=32)
def cached_tuned_lens(
    _model: LoadedModel, _lens: TunedLens, key: str, inputs: str | tuple, target: str | None, k: int
) -> LensResult:
    return run_tuned_lens(_model, _lens, unfreeze(inputs), target=target, k=k)


@st.cache_data(show_spinner="Decomposing the MLP output…", max_entries=32)
def cached_ffn(
    _model: LoadedModel, key: str, inputs: str | tuple, layer: int, position: int
) -> FfnUpdatesResult:
    return run_ffn_updates(_model, unfreeze(inputs), layer=layer, position=position)


def lens_training_inputs(model: LoadedModel) -> list:
    """Held-in text for fitting: the shipped corpus for text models, random task inputs else."""
    if model.codec is None:
        train, _ = split_corpus(load_corpus(), 0.2, seed=0)
        return train
    rng = random.Random(0)
    values = list(model.codec.input_values)
    return [[rng.choice(values) for _ in range(model.codec.max_len)] for _ in range(512)]


def stored_lens(model: LoadedModel) -> TunedLens | None:
    """The tuned lens saved for this model, if any."""
    if not has_lens(model):
        return None
    return TunedLens.from_state(*load_lens(model))


def fit_and_store(model: LoadedModel) -> TunedLens:
    """Fit an OLS tuned lens with a progress bar and save it for next time."""
    bar = st.progress(0.0, text="Fitting the tuned lens (least squares per layer)…")

    def progress(stage: str, done: int, total: int) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{stage}: {done}/{total}")

    if model.codec is None:  # closed-form OLS: one pass, no backward through the 49k unembedding
        options = TunedLensOptions(method="ols", max_tokens=FIT_TOKENS["pretrained"])
    else:  # small models: train on KL from the identity (OLS is not KL-optimal at early layers)
        options = TunedLensOptions(
            method="kl", init="identity", max_tokens=FIT_TOKENS["other"], steps=300, lr=1e-2
        )
    lens, report = fit_tuned_lens(
        model, lens_training_inputs(model), options=options, progress=progress
    )
    save_lens(model, lens)
    bar.empty()
    st.success(f"Fitted on {report.n_tokens:,} tokens in {report.seconds:.1f} s and saved.")
    return lens


def render(model: LoadedModel) -> None:
    """Draw the lens page for ``model``."""
    st.header("Lenses")
    st.caption(
        "Each row reads the residual stream entering a block through the model's final norm and "
        "unembedding (logit lens), or first through a per-layer affine map fitted to the final "
        "residual (tuned lens). The last row ('final') is the model's own output."
    )
    key = model_key(model)
    inputs = prompt_input(model, key="lens.prompt")
    c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
    default_target = " Paris" if model.codec is None else ""
    target = c1.text_input(
        "Target token (optional, one token)", value=default_target, key=f"lens.target.{model.name}"
    )
    colour_label = c2.selectbox(
        "Colour cells by", list(COLOURS), index=1 if target else 0, key="lens.colour"
    )
    k = int(c3.number_input("Top-k", 1, 50, value=10, key="lens.k"))
    method = c4.radio("Lens", ["logit", "tuned"], horizontal=True, key="lens.method")
    frozen = freeze(inputs)
    try:
        logit = cached_logit_lens(model, key, frozen, target or None, k)
    except OptionError as exc:
        if not target:
            raise
        st.error(f"{exc}; showing the lens without a target.")
        target = ""
        logit = cached_logit_lens(model, key, frozen, None, k)

    results = {"logit lens": logit}
    if method == "tuned":
        lens = stored_lens(model)
        if lens is None:
            st.info("No tuned lens is stored for this model yet.", icon=":material/info:")
            if st.button("Fit a tuned lens now (a few thousand tokens)", key="lens.fit"):
                lens = fit_and_store(model)
        if lens is not None:
            results["tuned lens"] = cached_tuned_lens(model, lens, key, frozen, target or None, k)
    shown = results.get("tuned lens", logit)

    colour = COLOURS[colour_label]
    if colour == "target_prob" and shown.target is None:
        st.warning("Give a target token to colour by its probability; showing top-1 probability.")
        colour = "top1_prob"
    st.plotly_chart(lens_grid_figure(shown, colour), width="stretch")
    last = len(shown.tokens) - 1
    position = st.slider("Position for the curves", 0, last, last, key=f"lens.position.{key}")
    st.plotly_chart(lens_curve_figure(results, position=position), width="stretch")
    if shown.target is not None:
        entered = shown.first_layer_in_top(shown.target, 5, position)
        st.metric(
            f"First layer with {shown.target!r} in the top 5 at position {position}",
            entered or "never",
        )

    st.subheader("FFN sub-updates")
    st.caption("The MLP's output is a sum of value vectors weighted by neuron activations (Geva et "
               "al. 2022); the largest |activation| x norm are listed with the tokens each promotes.")  # fmt: skip
    f1, f2 = st.columns(2)
    layer = int(f1.number_input("MLP layer", 0, model.cfg.n_layers - 1, value=model.cfg.n_layers - 1,
                                key=f"lens.ffn.layer.{key}"))  # fmt: skip
    ffn_position = int(f2.number_input("Position", 0, last, value=last, key=f"lens.ffn.pos.{key}"))
    ffn = cached_ffn(model, key, frozen, layer, ffn_position)
    st.caption(f"Model's prediction at position {ffn_position}: {ffn.prediction!r}")
    st.dataframe(ffn.to_frame(), hide_index=True, width="stretch")
    with st.expander("Lens table"):
        st.dataframe(shown.to_frame(), hide_index=True, width="stretch")
