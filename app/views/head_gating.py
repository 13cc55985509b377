"""Causal head gating page: fit one gate per head, see which heads facilitate, interfere or
don't matter, check the classes by ablation, and open a head in the attention viewer.

Task models are fitted on their task's own samples and exact targets, compiled RASP models on
random inputs and the interpreter's outputs, text models on next-token prediction over the
shipped corpus, typed prompts or an uploaded ``.txt`` file. Contrastive mode fits the heads
one dataset needs and another does not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import streamlit as st

from analysis.contrastive_gating import ContrastiveGatingResult, fit_contrastive_head_gates
from analysis.errors import OptionError
from analysis.figures import (
    ablation_figure,
    contrastive_map_figure,
    gating_loss_figure,
    gating_map_figure,
)
from analysis.gating_ablation import AblationCheck, ablation_check
from analysis.gating_data import GatingData, induction_data, next_token_data, task_data
from analysis.head_gating import HeadGatingOptions, HeadGatingResult, fit_head_gates
from app.views.inputs import clicked_cell, model_key, open_in_attention
from models import LoadedModel
from models.corpus import load_corpus, split_corpus
from models.targets import output_ids, sample_inputs, target_function

SCORES = ("facilitation", "interference", "irrelevance")
#: Fit defaults per model family: the authors' lr 1.0 + clip 1.0 everywhere (compiled models
#: rely on the cliff check, on by default up to 64 heads); text models get few steps on a CPU.
DEFAULTS = {
    "codec": dict(steps=80, seeds=2, lam=0.1, lr=1.0, clip=1.0, samples=100, batch=32),
    "text": dict(steps=10, seeds=2, lam=0.1, lr=1.0, clip=1.0, samples=12, batch=8),
}


@dataclass(frozen=True)
class DatasetChoice:
    """What the user picked as data: enough to rebuild it and to key the result cache."""

    source: str
    n: int = 0
    lengths: tuple[int, int] = (1, 1)
    max_len: int = 24
    lines: tuple[str, ...] = ()
    digest: str = ""
    seed: int = 0


CORPUS, REPEATED = "Shipped corpus", "Repeated random tokens"


# -- data --------------------------------------------------------------------------------------
def _codec_data(model: LoadedModel, seqs: list, name: str) -> GatingData:
    return task_data(model, seqs, output_ids(model, seqs), name=name)


def _text_chunks(text: str) -> list[str]:
    """Paragraphs of a text (blank-line separated), or its lines when it has one paragraph."""
    parts = [p.strip() for p in text.split("\n\n") if p.strip()]
    if len(parts) <= 1:
        parts = [line.strip() for line in text.splitlines() if line.strip()]
    return parts


def build_data(model: LoadedModel, choice: DatasetChoice) -> tuple[GatingData, GatingData]:
    """``(fit data, held-out data for the ablation check)``; typed/uploaded data is reused."""
    if choice.source == "samples":
        if choice.n < 1:
            raise OptionError(f"the sample count must be at least 1, got {choice.n}")
        target_function(model)  # no exact targets: a clear error before sampling
        label = f"{model.name} samples (len {choice.lengths[0]}–{choice.lengths[1]})"
        fit = sample_inputs(model, choice.n, choice.seed, choice.lengths)
        held = sample_inputs(model, max(16, choice.n // 2), choice.seed + 1, choice.lengths)
        return _codec_data(model, fit, label), _codec_data(model, held, f"{label}, held out")
    if choice.source == "typed":
        seqs = [[model.codec.parse_value(t) for t in line.split()] for line in choice.lines]
        if not seqs:
            raise OptionError("no inputs: type one input per line (tokens separated by spaces)")
        data = _codec_data(model, seqs, f"{len(seqs)} typed inputs")
        return data, data
    if choice.source == "repeated":
        half = (choice.max_len - 1) // 2
        if choice.n < 1 or half < 1:
            raise OptionError(
                f"repeated random tokens need at least 1 row and 3 tokens per row, got "
                f"{choice.n} rows of {choice.max_len}"
            )
        return (
            induction_data(model, choice.n, half_length=half, seed=0),
            induction_data(model, max(4, choice.n // 2), half_length=half, seed=1,
                           name="repeated random tokens, held out"),
        )  # fmt: skip
    if choice.source == "corpus":
        if choice.n < 1:
            raise OptionError(f"the sample count must be at least 1, got {choice.n}")
        train, held = split_corpus(load_corpus(), 0.2, seed=0)
        return (
            next_token_data(model, train[: choice.n], max_len=choice.max_len, name="corpus"),
            next_token_data(
                model,
                held[: max(4, choice.n // 2)],
                max_len=choice.max_len,
                name="corpus, held out",
            ),
        )
    texts = list(choice.lines[: choice.n] if choice.source == "file" else choice.lines)
    if not texts:
        raise OptionError("no text: type one prompt per line or upload a non-empty .txt file")
    data = next_token_data(
        model, texts, max_len=choice.max_len, name=f"{len(texts)} {choice.source}"
    )
    return data, data


# -- widgets -----------------------------------------------------------------------------------
def dataset_input(model: LoadedModel, prefix: str, *, role: str = "fit") -> DatasetChoice:
    """The dataset widgets (keys under ``prefix``); ``role`` (``fit``, ``keep``, ``forget``)
    picks the defaults: contrastive mode starts with short inputs against long ones."""
    k = f"{prefix}.{model.name}"
    if model.codec is not None:
        source = st.radio("Data", ["Samples", "Typed inputs"], horizontal=True, key=f"{k}.src")
        max_len = model.codec.max_len
        if source == "Typed inputs":
            values = list(model.codec.input_values)
            example = " ".join(str(v) for v in values[: max(1, min(len(values), max_len))])
            text = st.text_area("Inputs, one per line (tokens separated by spaces)", example,
                                key=f"{k}.typed")  # fmt: skip
            lines = tuple(line for line in text.splitlines() if line.strip())
            return DatasetChoice("typed", lines=lines)
        half = max(1, max_len // 2)
        default = {"keep": (1, half), "forget": (min(half + 1, max_len), max_len)}.get(
            role, (1, max_len)
        )
        c1, c2 = st.columns([1, 2])
        n = c1.number_input("Samples", 0, 5000, DEFAULTS["codec"]["samples"], step=10,
                            key=f"{k}.n")  # fmt: skip
        lengths = (
            c2.slider("Input lengths", 1, max_len, default, key=f"{k}.len")
            if max_len > 1
            else (1, 1)
        )
        return DatasetChoice(
            "samples", n=int(n), lengths=tuple(lengths), seed=int(role == "forget")
        )
    source = st.radio("Data", [CORPUS, REPEATED, "Typed prompts", "Upload a .txt file"],
                      index=int(role == "forget"), horizontal=True, key=f"{k}.src",
                      help=f"{REPEATED}: rows [BOS, x, x] of random tokens, scored on the second x "
                      "(what induction heads predict).")  # fmt: skip
    c1, c2 = st.columns(2)
    max_len = int(c2.number_input("Tokens per text", 2, 512, 24, key=f"{k}.maxlen"))
    if source == REPEATED:
        n = int(c1.number_input("Rows", 0, 2000, DEFAULTS["text"]["samples"], key=f"{k}.rows"))
        return DatasetChoice("repeated", n=n, max_len=max_len)
    if source == "Typed prompts":
        text = st.text_area("Prompts, one per line", "The capital of France is Paris.\n"
                            "One, two, three, four, five.", key=f"{k}.prompts")  # fmt: skip
        lines = tuple(line.strip() for line in text.splitlines() if line.strip())
        return DatasetChoice("prompts", max_len=max_len, lines=lines)
    n = int(c1.number_input("Texts", 0, 2000, DEFAULTS["text"]["samples"], key=f"{k}.n"))
    if source == CORPUS:
        return DatasetChoice("corpus", n=n, max_len=max_len)
    upload = st.file_uploader("Text file (paragraphs or lines)", type=["txt"], key=f"{k}.file")
    if upload is None:
        return DatasetChoice("file", n=n, max_len=max_len)
    raw = upload.getvalue()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OptionError(f"{upload.name}: not UTF-8 text ({exc})") from exc
    return DatasetChoice("file", n=n, max_len=max_len, lines=tuple(_text_chunks(text)),
                         digest=hashlib.sha1(raw).hexdigest())  # fmt: skip


def options_input(model: LoadedModel) -> HeadGatingOptions:
    """The fit settings; defaults fit a task or RASP model in seconds on one CPU thread."""
    d = DEFAULTS["codec" if model.codec is not None else "text"]
    k = f"chg.opt.{model.name}"
    c1, c2, c3, c4 = st.columns(4)
    steps = c1.number_input("Steps per stage", 1, 2000, d["steps"], key=f"{k}.steps")
    seeds = c2.number_input("Seeds", 1, 16, d["seeds"], key=f"{k}.seeds")
    lam = c3.number_input("λ (regulariser)", 0.0, 10.0, d["lam"], step=0.05, key=f"{k}.lam")
    lr = c4.number_input("Learning rate", 0.001, 10.0, d["lr"], step=0.05, format="%.3f",
                         key=f"{k}.lr")  # fmt: skip
    with st.expander("More settings"):
        e1, e2, e3, e4 = st.columns(4)
        batch = e1.number_input("Batch size", 1, 512, d["batch"], key=f"{k}.batch")
        clip = e2.number_input("Gradient clip (0: none)", 0.0, 100.0, d["clip"], key=f"{k}.clip")
        threshold = e3.slider("Class threshold", 0.05, 0.95, 0.5, key=f"{k}.threshold")
        seed = e4.number_input("Random seed", 0, 10_000, 0, key=f"{k}.seed")
        r1, r2, r3 = st.columns(3)
        init = r1.radio("Initial gates", ["open", "uniform"], horizontal=True, key=f"{k}.init",
                        help="open: every gate starts near 1; uniform: U(0, 1), as the authors")  # fmt: skip
        batches = r2.radio("Batches", ["per_seed", "shared"], horizontal=True, key=f"{k}.batches",
                           help="per_seed: each seed draws its own batches; shared: one batch "
                           "for all seeds, as the authors")  # fmt: skip
        cliff = r3.radio("Cliff check", ["auto", "on", "off"], horizontal=True, key=f"{k}.cliff",
                         help="put back gates a stage slid over a loss cliff when that lowers "
                         "its objective (auto: on up to 64 heads)")  # fmt: skip
    return HeadGatingOptions(
        lam=float(lam), lr=float(lr), grad_clip=float(clip) or None, steps=int(steps),
        batch_size=int(batch), n_seeds=int(seeds), init=init, threshold=float(threshold),
        eval_rows=64 if model.codec is not None else 16, seed=int(seed), batches=batches,
        cliff_check={"auto": None, "on": True, "off": False}[cliff],
    )  # fmt: skip


def _progress_bar(stages: tuple[str, ...], steps: int):
    bar = st.progress(0.0, text="Fitting gates…")
    total = len(stages) * steps

    def progress(stage: str, done: int, of: int) -> None:
        if stage not in stages:
            return
        at = stages.index(stage) * steps + done
        if done == of or done % max(1, steps // 50) == 0:
            bar.progress(min(1.0, at / total), text=f"Fitting gates: {stage} {done}/{of}")

    return bar, progress


# -- results -----------------------------------------------------------------------------------
def show_result(model: LoadedModel, result: HeadGatingResult, check: AblationCheck) -> None:
    """Maps, selected head, loss curves, the table and the ablation check."""
    key = model_key(model)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Ungated loss", f"{result.ungated_loss:.4f}")
    m2.metric("Ungated accuracy", f"{result.ungated_accuracy:.3f}")
    m3.metric("Valid seeds", f"{int(result.valid_seeds.sum())}/{len(result.valid_seeds)}")
    m4.metric("Fit time", f"{result.seconds:.1f} s")
    for warning in result.warnings:
        st.warning(warning, icon=":material/warning:")
    left, right = st.columns(2, gap="large")
    with left:
        event = st.plotly_chart(gating_map_figure(result, "class"), on_select="rerun",
                                selection_mode="points", key=f"chg.map.{key}", width="stretch")  # fmt: skip
    with right:
        score = st.selectbox("Score map", SCORES, key="chg.score")
        st.plotly_chart(gating_map_figure(result, score), width="stretch")
    clicked = clicked_cell(event)
    if clicked is not None:
        st.session_state["chg.selected"] = clicked
    selected = st.session_state.get("chg.selected")
    if selected is not None and selected[0] < len(result.classes):
        layer, head = selected
        label = f"L{layer}H{head}"
        values = ", ".join(f"{s} {float(result.scores[s][layer, head]):.3f}" for s in SCORES)
        c1, c2 = st.columns([3, 1])
        c1.info(f"Selected {label}: {result.classes[layer][head]} ({values})")
        if c2.button(f"Open {label} in Attention", key="chg.open", icon=":material/grid_on:"):
            open_in_attention(model, layer, head)
    else:
        st.caption(
            "Click a head in the class map to select it and open it in the attention viewer."
        )
    st.plotly_chart(gating_loss_figure(result), width="stretch")
    st.subheader("Every head")
    st.dataframe(result.to_frame(), hide_index=True, width="stretch")
    st.subheader("Ablation check")
    st.caption(
        "Loss change when all heads of one class are zero-ablated together, on held-out data "
        "where the dataset allows: facilitating should raise it, irrelevant leave it, "
        "interfering lower it."
    )
    st.plotly_chart(ablation_figure(check), width="stretch")
    st.dataframe(check.to_frame(), hide_index=True, width="stretch")


def show_contrastive(result: ContrastiveGatingResult) -> None:
    """The contrastive gate map, forget heads and the losses before/after gating."""
    heads = result.forget_heads()
    st.success(f"Heads needed for '{result.forget_name}' but not for '{result.keep_name}': "
               + (", ".join(heads) if heads else "none"))  # fmt: skip
    c1, c2 = st.columns(2)
    c1.metric("Keep loss (ungated → gated)", f"{result.keep_loss['gated']:.4f}",
              f"{result.keep_loss['gated'] - result.keep_loss['ungated']:+.4f}", delta_color="inverse")  # fmt: skip
    c2.metric("Forget loss (ungated → gated)", f"{result.forget_loss['gated']:.4f}",
              f"{result.forget_loss['gated'] - result.forget_loss['ungated']:+.4f}")  # fmt: skip
    st.plotly_chart(contrastive_map_figure(result), width="stretch")
    st.dataframe(result.to_frame(), hide_index=True, width="stretch")


def render(model: LoadedModel) -> None:
    """Draw the head gating page for ``model``."""
    st.header("Causal head gating")
    st.caption(
        "One gate per head scales its output while the model stays frozen. Gates are fitted "
        "three times: to the data alone, then pushed to stay open (G+) or to close (G−). "
        "Facilitating heads stay open under removal pressure, interfering heads close even "
        "under retention pressure, irrelevant heads close when pushed (Nam et al., 2025)."
    )
    key = model_key(model)
    contrastive = st.toggle("Contrastive mode: heads dataset B needs and dataset A does not",
                            key="chg.contrastive")  # fmt: skip
    if contrastive:
        a, b = st.columns(2, gap="large")
        with a:
            st.markdown("**Dataset A: keep**")
            keep = dataset_input(model, "chg.keep", role="keep")
        with b:
            st.markdown("**Dataset B: forget**")
            forget = dataset_input(model, "chg.forget", role="forget")
        choices: tuple[DatasetChoice, ...] = (keep, forget)
    else:
        choices = (dataset_input(model, "chg.data"),)
    options = options_input(model)
    if contrastive and options.init == "open" and model.codec is not None:
        st.caption("Tip: squared-error (numerical) programs need uniform initial gates here.")
    results = st.session_state.setdefault("chg.results", {})
    run_key = repr((key, contrastive, choices, options))
    if st.button("Run CHG", type="primary", key="chg.run", icon=":material/play_arrow:"):
        options.check()
        built = [build_data(model, c) for c in choices]
        if contrastive:
            bar, progress = _progress_bar(("contrastive",), options.steps)
            (keep_data, _), (forget_data, _) = built
            keep_data = replace(keep_data, name=f"A: {keep_data.name}")
            forget_data = replace(forget_data, name=f"B: {forget_data.name}")
            results[run_key] = fit_contrastive_head_gates(
                model, keep_data, forget_data, options=options, progress=progress
            )
        else:
            bar, progress = _progress_bar(("none", "g_plus", "g_minus"), options.steps)
            data, held = built[0]
            result = fit_head_gates(model, data, options=options, progress=progress)
            results[run_key] = (
                result,
                ablation_check(model, held, result, max_rows=options.eval_rows),
            )
        bar.empty()
    stored = results.get(run_key)
    if stored is None:
        st.info("Choose the data and settings, then press **Run CHG**.", icon=":material/tune:")
    elif contrastive:
        show_contrastive(stored)
    else:
        show_result(model, *stored)
