"""Hallucination predictor page: label a text model's answers to factual questions, predict
wrong answers from SAE concepts of the question (PLS and logistic regression, cross-validated
ROC) against the raw residual, the CASAL known-vs-unknown direction per layer, suppression
of the top-loading concepts, and a steering slider along the known direction."""

from __future__ import annotations

import streamlit as st

from analysis.errors import OptionError
from analysis.figures.hallucination import known_unknown_figure, roc_figure
from analysis.hallucination import (
    TEMPLATE,
    fit_hallucination_predictor,
    known_unknown_direction,
    label_answers,
    question_features,
)
from analysis.hooks import resid_post
from analysis.steering import add_direction, greedy_generate, suppress_latents
from app.views.inputs import model_key
from models import LoadedModel
from models.questions import load_questions, question_set_source
from probes.sae_layers import layer_sae_info, load_layer_saes

SET_NAME = "default"


def render(model: LoadedModel) -> None:
    """Draw the hallucination predictor page for ``model``."""
    st.header("Hallucination predictor")
    st.caption("Questions with known answers are answered greedily; wrong answers are "
               "hallucinations. SAE concepts of the question (max over its tokens) predict them "
               "(PLS, as in Suresh et al. 2025, and logistic regression), against the raw "
               "residual at the question's last token. The known-vs-unknown direction follows "
               "CASAL (Yang et al. 2025).")  # fmt: skip
    if model.codec is not None:
        raise OptionError(f"the hallucination predictor needs a text model; {model.name!r} is a "
                          f"{model.kind} model (try smollm2-135m)")  # fmt: skip
    questions = load_questions()
    st.caption(f"Question set: {len(questions)} questions. {question_set_source()}")
    key = model_key(model)
    c1, c2 = st.columns(2)
    n = int(c1.number_input("Questions", 4, len(questions), len(questions), key=f"hal.n.{key}"))
    template = c2.text_input("Prompt template", TEMPLATE, key="hal.template")
    store = st.session_state.setdefault("hal.store", {})
    label_key = repr((key, n, template))
    if st.button("Answer the questions", type="primary", key="hal.label", icon=":material/quiz:"):
        bar = st.progress(0.0, text="Answering…")
        subset = questions[:: max(1, len(questions) // n)][:n]
        store[label_key] = label_answers(model, subset, template=template,
                                         progress=lambda d, t: bar.progress(d / t, text=f"{d}/{t}"))  # fmt: skip
        bar.empty()
    labels = store.get(label_key)
    if labels is None:
        st.info(
            "Press **Answer the questions** (SmolLM2 on a CPU: a few minutes).",
            icon=":material/quiz:",
        )
        return
    st.metric("Hallucination rate", f"{100 * labels.hallucination_rate:.1f}%",
              help=f"{int((~labels.correct).sum())} wrong of {len(labels.answers)}")  # fmt: skip
    st.dataframe(labels.to_frame(), hide_index=True, width="stretch", height=240)
    cached = sorted(layer_sae_info(model, None, SET_NAME))
    if not cached:
        st.info("No per-layer SAEs are cached for this model: train them on the **Concept "
                "tracing** page or with `python bench/sae_layers.py`.", icon=":material/info:")  # fmt: skip
        return
    layer = st.select_slider(
        "Layer", cached, value=cached[len(cached) // 2], key=f"hal.layer.{key}"
    )
    saes = load_layer_saes(model, cached, SET_NAME)
    feats_key = ("feats", label_key)
    if feats_key not in store:
        with st.spinner("Reading concepts of every question…"):
            store[feats_key] = question_features(model, saes, labels.prompts)
    concepts, resid = store[feats_key]
    fit = fit_hallucination_predictor(concepts[layer], resid[layer], labels.correct, layer=layer)
    st.plotly_chart(roc_figure(fit), width="stretch")
    st.dataframe(fit.to_frame(), hide_index=True, width="stretch")
    st.subheader("Top-loading concepts")
    st.caption("Latents whose activation most raises the PLS prediction of a wrong answer, with "
               "how often they fire on questions answered wrongly and rightly.")  # fmt: skip
    st.dataframe([{"latent": lat, "coefficient": c, "fires_on_wrong": w, "fires_on_right": r}
                  for lat, c, w, r in fit.top_concepts], hide_index=True, width="stretch")  # fmt: skip
    casal = known_unknown_direction(resid, labels.correct)
    st.subheader("Known vs unknown direction (CASAL)")
    st.plotly_chart(known_unknown_figure(casal), width="stretch")
    k = st.number_input("Concepts to suppress", 1, 50, 5, key="hal.k")
    if st.button("Re-answer with the top concepts suppressed", key="hal.suppress"):
        top = [lat for lat, *_ in fit.top_concepts[: int(k)]]
        if not top:
            raise OptionError("no concept has a positive loading at this layer")
        bar = st.progress(0.0, text="Answering with concepts suppressed…")
        subset = questions[:: max(1, len(questions) // n)][:n]
        again = label_answers(model, subset, template=template, hooks=[suppress_latents(saes[layer], top)],
                              progress=lambda d, t: bar.progress(d / t, text=f"{d}/{t}"))  # fmt: skip
        bar.empty()
        store[("supp", label_key, layer, int(k))] = again
    again = store.get(("supp", label_key, layer, int(k)))
    if again is not None:
        st.metric("Hallucination rate with them suppressed", f"{100 * again.hallucination_rate:.1f}%",
                  f"{100 * (again.hallucination_rate - labels.hallucination_rate):+.1f} points",
                  delta_color="inverse")  # fmt: skip
    st.markdown("**Steer along the known direction**")
    s1, s2 = st.columns([1, 2])
    alpha = s1.slider(
        "Strength (× unknown−known difference)", -3.0, 3.0, -1.0, 0.25, key="hal.alpha"
    )
    question = s2.text_input("Question", "What is the capital of Australia?", key="hal.q")
    best = casal.best_layer()
    prompt = template.format(question=question)
    clean = greedy_generate(model, prompt)
    steered = greedy_generate(
        model, prompt, hooks=[add_direction(resid_post(best), casal.direction(best), alpha)]
    )
    st.write(f"At L{best} (highest silhouette): clean → **{clean.strip() or '(nothing)'}**; "
             f"steered → **{steered.strip() or '(nothing)'}**")  # fmt: skip
