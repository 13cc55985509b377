"""Circuit diffing page: find a circuit twice and see what changed between the two.

Four comparisons: the same model on two datasets (contrastive), a task model at two training
checkpoints, a task model before and after fine-tuning on another task, and two models with
different architectures (heads aligned by role). Each circuit comes from node attribution
(integrated gradients or exact mean ablation), causal head gating or, for compiled models,
the roles known by construction. Faithfulness of each circuit sits beside the overlaps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import streamlit as st
import torch

from analysis.circuit_diff import CircuitDiff, diff_circuits
from analysis.circuits import (
    Circuit,
    circuit_from_gating,
    model_circuit_from_roles,
    split_edge,
)
from analysis.errors import OptionError
from analysis.faithfulness import ablation_means, circuit_faithfulness
from analysis.figures.circuits import (
    circuit_delta_figure,
    circuit_graph_figure,
    circuit_map_figure,
    map_node,
)
from analysis.gating_data import GatingData
from analysis.head_gating import HeadGatingOptions, fit_head_gates
from analysis.node_attribution import node_attribution
from app.views.head_gating import DatasetChoice, build_data, dataset_input
from app.views.inputs import clicked_cell, model_key, open_in_attention
from models import LoadedModel, load_model

#: Models with at most this many nodes default to exact mean ablation.
EXACT_UP_TO = 64
MODES = ("Two datasets", "Two checkpoints", "Fine-tuned", "Two models")
METHODS = {
    "attribution": "Node attribution (integrated gradients)",
    "exact": "Exact mean ablation (one pass per node)",
    "chg": "Causal head gating (heads only)",
    "eap": "Edge attribution patching (EAP-IG, edges)",
    "roles": "Compiled roles (ground truth)",
}


@dataclass(frozen=True)
class CircuitSettings:
    """How each circuit is found and judged."""

    method: str = "attribution"
    fraction: float = 0.1
    chg_steps: int = 80
    ablation: str = "mean"


def find_circuit(model: LoadedModel, data: GatingData, settings: CircuitSettings) -> Circuit:
    """The circuit of ``model`` on ``data`` by the chosen method."""
    if settings.method == "roles":
        return model_circuit_from_roles(model)
    if settings.method == "eap":
        return _eap_circuit(model, data, settings.fraction)
    if settings.method == "chg":
        options = HeadGatingOptions(steps=settings.chg_steps, n_seeds=2, batch_size=16)
        return circuit_from_gating(fit_head_gates(model, data, options=options))
    estimate = "exact" if settings.method == "exact" else "ig"
    return node_attribution(model, data, fraction=settings.fraction, estimate=estimate)  # type: ignore[arg-type]


def _eap_circuit(model: LoadedModel, data: GatingData, fraction: float) -> Circuit:
    """EAP-IG (5 steps) on the data's most common length: clean = its rows, corrupted = the
    same rows with every real token redrawn; metric = mean log-prob of the targets. Member
    edges score at least ``fraction`` of the top |score|; member nodes are those they touch."""
    from analysis.edge_attribution import (
        corrupt_tokens,
        edge_attribution_patching,
        target_logprob_metric,
    )

    length, rows = max(data.length_groups().items(), key=lambda kv: len(kv[1]))
    rows = rows[:64]
    tokens, targets, mask, _ = data.rows(rows, length)
    if not bool(mask.any()):
        raise OptionError(f"no supervised position in the {len(rows)} rows of length {length}")
    gen = torch.Generator().manual_seed(0)
    corrupted = corrupt_tokens(tokens, model.cfg.d_vocab, generator=gen)
    metric = target_logprob_metric(targets.masked_fill(~mask, -100))
    found = edge_attribution_patching(model, tokens, corrupted, metric, ig_steps=5,
                                      data_name=f"{data.name} (len {length})")  # fmt: skip
    scores = found.edge_scores.abs()
    edges = frozenset(e for e, v in zip(found.edges, scores.tolist(), strict=True)
                      if v > 0 and v >= fraction * float(scores.max()))  # fmt: skip
    touched = {n for e in edges for n in split_edge(e)} & set(found.nodes)
    return replace(found, members=frozenset(touched), edge_members=edges)


def _faith(
    model: LoadedModel, data: GatingData, circuit: Circuit, ablation: str, means: dict | None
) -> dict:
    f = circuit_faithfulness(model, data, circuit, ablation=ablation, means=means)  # type: ignore[arg-type]
    return f.to_dict()


@dataclass(frozen=True)
class Comparison:
    """Everything the page draws for one run."""

    a: Circuit
    b: Circuit
    diff: CircuitDiff
    faithfulness: tuple[dict, ...]
    notes: tuple[str, ...] = ()


@st.cache_resource(show_spinner="Training with snapshots…", max_entries=4)
def _snapshots(task: str, early: int, late: int, seed: int) -> tuple[LoadedModel, ...]:
    from models.finetune import train_snapshots
    from models.tasks import get_task

    config = replace(get_task(task).train_config, seed=seed)
    models, _ = train_snapshots(task, [early, late], config=config)
    return tuple(models)


@st.cache_resource(show_spinner="Fine-tuning…", max_entries=4)
def _finetuned(_model: LoadedModel, key: str, task: str, steps: int, lr: float) -> LoadedModel:
    from models.finetune import finetune_task_model

    return finetune_task_model(_model, task, steps=steps, lr=lr)[0]


@st.cache_resource(show_spinner="Loading model B…", max_entries=2)
def _load_b(spec: str) -> LoadedModel:
    return load_model(spec)


def _compare(
    a_model, a_data, b_model, b_data, settings, *, alignment=None, confidence=None, cross=True
):
    a = find_circuit(a_model, a_data, settings)
    b = find_circuit(b_model, b_data, settings if b_model.head_roles else _no_roles(settings))
    if alignment is not None:
        # Only heads are matched by role; MLPs of different depths are not comparable.
        alignment = {k: v for k, v in alignment.items() if k in b.nodes and v in a.nodes}
    diff = diff_circuits(a, b, alignment=alignment, confidence=confidence)
    # Mean activations once per (model, data), shared by both circuits run on that data.
    mean = settings.ablation == "mean"
    means_a = ablation_means(a_model, a_data) if mean else None
    means_b = ablation_means(b_model, b_data) if mean else None
    ab = settings.ablation
    faith = [
        {**_faith(a_model, a_data, a, ab, means_a), "circuit": "A", "on": a_data.name},
        {**_faith(b_model, b_data, b, ab, means_b), "circuit": "B", "on": b_data.name},
    ]
    if cross:  # each circuit on the other's data (same model shape)
        faith += [
            {**_faith(b_model, b_data, a, ab, means_b), "circuit": "A", "on": b_data.name},
            {**_faith(a_model, a_data, b, ab, means_a), "circuit": "B", "on": a_data.name},
        ]
    summary = {k: faith[i]["faithfulness"] for i, k in enumerate(("a", "b"))}
    diff = diff.with_faithfulness({"faithfulness": summary["a"]}, {"faithfulness": summary["b"]})
    return Comparison(a, b, diff, tuple(faith))


def _no_roles(settings: CircuitSettings) -> CircuitSettings:
    return replace(settings, method="attribution") if settings.method == "roles" else settings


# -- widgets ---------------------------------------------------------------------------------
def settings_input(model: LoadedModel) -> CircuitSettings:
    """Method, membership cut and ablation."""
    methods = [m for m in METHODS if m != "roles" or model.head_roles]
    # Exact ablation costs one pass per node: the default where that is cheap and the
    # first-order estimate would be the less trustworthy choice.
    small = model.cfg.n_layers * (model.cfg.n_heads + 1) <= EXACT_UP_TO
    c1, c2, c3 = st.columns([2, 1, 1])
    method = c1.selectbox("Method", methods, index=methods.index("exact" if small else "attribution"),
                          format_func=METHODS.get, key="circ.method")  # fmt: skip
    fraction = c2.slider("Member cut (share of the top score)", 0.01, 0.9, 0.1,
                         key="circ.fraction", disabled=method in ("chg", "roles"))  # fmt: skip
    ablation = c3.radio("Ablation", ["mean", "zero"], horizontal=True, key="circ.ablation")
    steps = 80
    if method == "chg":
        steps = int(st.number_input("CHG updates per stage", 10, 1000, 80, key="circ.chg_steps"))
    return CircuitSettings(method, float(fraction), steps, ablation)


def _two_datasets(model: LoadedModel, settings: CircuitSettings):
    left, right = st.columns(2, gap="large")
    with left:
        st.markdown("**Dataset A**")
        a = dataset_input(model, "circ.a", role="keep")
    with right:
        st.markdown("**Dataset B**")
        b = dataset_input(model, "circ.b", role="forget")

    def run() -> Comparison:
        da, db = (build_data(model, c)[0] for c in (a, b))
        da, db = replace(da, name=f"A: {da.name}"), replace(db, name=f"B: {db.name}")
        return _compare(model, da, model, db, settings)

    return (a, b), run


def _task_name(model: LoadedModel) -> str:
    if model.kind != "task":
        raise OptionError(
            f"this comparison trains a task model; {model.name!r} is a {model.kind} model. "
            "Pick a task:<name> model in the sidebar."
        )
    return model.provenance.get("task", model.spec.name)


def _checkpoints(model: LoadedModel, settings: CircuitSettings):
    task = _task_name(model)
    c1, c2, c3 = st.columns(3)
    early = int(c1.number_input("Early step", 0, 100000, 50, key="circ.early"))
    late = int(c2.number_input("Late step", 1, 100000, 600, key="circ.late"))
    seed = int(c3.number_input("Training seed", 0, 10000, 0, key="circ.seed"))
    data_choice = dataset_input(model, "circ.ckpt")
    if late <= early:
        raise OptionError(f"the late step ({late}) must come after the early step ({early})")

    def run() -> Comparison:
        first, second = _snapshots(task, early, late, seed)
        data = build_data(first, data_choice)[0]
        comp = _compare(first, data, second, data, settings, cross=False)
        accs = [m.provenance.get("held_out_seq_acc", "?") for m in (first, second)]
        note = (f"Held-out sequence accuracy: step {early} {accs[0]}, step {late} {accs[1]} "
                f"(a fresh {task} model trained with seed {seed}, not the shipped one).")  # fmt: skip
        return replace(comp, notes=(note,))

    return (task, early, late, seed, data_choice), run


def _finetune(model: LoadedModel, settings: CircuitSettings):
    from models.tasks import TASKS

    base_task = TASKS[_task_name(model)]
    same = [t for t in TASKS.values() if t.name != base_task.name
            and len(t.input_values) == len(base_task.input_values)
            and len(t.output_values) == len(base_task.output_values)
            and t.max_len == base_task.max_len and t.causal == base_task.causal]  # fmt: skip
    if not same:
        raise OptionError(f"no other task shares {base_task.name}'s vocabularies and length")
    c1, c2, c3 = st.columns(3)
    task = c1.selectbox("Fine-tune on", [t.name for t in same], key="circ.ft_task")
    steps = int(c2.number_input("Steps", 10, 20000, 400, key="circ.ft_steps"))
    lr = float(c3.number_input("Learning rate", 1e-5, 1e-1, 3e-3, format="%.4f", key="circ.ft_lr"))
    n = int(st.number_input("Samples per task", 10, 2000, 100, key="circ.ft_n"))

    def run() -> Comparison:
        tuned = _finetuned(model, model_key(model), task, steps, lr)
        da = build_data(model, DatasetChoice("samples", n=n, lengths=(1, base_task.max_len)))[0]
        db = build_data(tuned, DatasetChoice("samples", n=n, lengths=(1, base_task.max_len)))[0]
        comp = _compare(model, da, tuned, db, settings, cross=False)
        acc = tuned.provenance.get("held_out_seq_acc", "?")
        return replace(comp, notes=(f"{tuned.name}: held-out sequence accuracy on {task} {acc}.",))

    return (task, steps, lr, n), run


def _two_models(model: LoadedModel, settings: CircuitSettings):
    spec = st.text_input("Model B", _partner(model), key="circ.model_b",
                         help="Any model string: task:sort, rasp:sort, program:sort, a folder…").strip()  # fmt: skip
    left, right = st.columns(2, gap="large")
    with left:
        st.markdown(f"**Data of A ({model.name})**")
        a = dataset_input(model, "circ.ma")
    other = _load_b(spec)
    with right:
        st.markdown(f"**Data of B ({other.name})**")
        b = dataset_input(other, "circ.mb")
    same_shape = (other.cfg.n_layers, other.cfg.n_heads) == (model.cfg.n_layers, model.cfg.n_heads)

    def run() -> Comparison:
        da, db = build_data(model, a)[0], build_data(other, b)[0]
        alignment, confidence, notes = None, None, ()
        if not same_shape:
            alignment, confidence, notes = _align(model, other)
        comp = _compare(model, da, other, db, settings, alignment=alignment,
                        confidence=confidence, cross=False)  # fmt: skip
        return replace(comp, notes=notes)

    return (spec, a, b), run


def _partner(model: LoadedModel) -> str:
    name = model.spec.name
    return {"task": f"rasp:{name}", "rasp": f"task:{name}", "program": f"task:{name}"}.get(
        model.kind, model.name
    )


def _align(model: LoadedModel, other: LoadedModel):
    """Confidently matched heads of ``other`` -> ``model`` (effect similarity), their
    similarities, and a note."""
    import numpy as np

    from analysis.head_matching import match_heads

    if model.codec is None or other.codec is None:
        raise OptionError("head matching across architectures needs two task-vocabulary models")
    allowed = sorted(set(model.codec.input_values) & set(other.codec.input_values), key=str)
    max_len = min(model.codec.max_len, other.codec.max_len)
    if not allowed:
        raise OptionError(f"{model.name} and {other.name} share no input value to match heads on")
    rng = np.random.default_rng(0)
    seqs = [[allowed[int(i)] for i in rng.integers(0, len(allowed), int(rng.integers(1, max_len + 1)))]
            for _ in range(100)]  # fmt: skip
    matching = match_heads(model, other, seqs)
    alignment = matching.alignment()
    confidence = {p.head_b: p.similarity for p in matching.pairs if p.head_b in alignment}
    pairs = ", ".join(f"{a} ↔ {b}" for b, a in alignment.items()) or "none"
    note = (f"Heads aligned by role: Hungarian matching of ablation effects on "
            f"{len(seqs)} shared inputs; confident pairs (A ↔ B): {pairs}. "
            "Unmatched heads are listed as unaligned and left out of the overlaps.")  # fmt: skip
    return alignment, confidence, (note,)


# -- results ---------------------------------------------------------------------------------
def show_comparison(model: LoadedModel, comp: Comparison) -> None:
    """Metrics, maps, graph, table and faithfulness of one comparison."""
    diff, a, b = comp.diff, comp.a, comp.b
    for note in comp.notes:
        st.caption(note)
    if diff.frame.empty:
        st.warning("No node of B is aligned with a node of A, so there is nothing to compare: "
                   "the two models share no confidently matched head. Each circuit is shown "
                   "on its own below.", icon=":material/link_off:")  # fmt: skip
    m = st.columns(6)
    m[0].metric("Aligned nodes", f"{len(diff.frame)}",
                help=f"unaligned: {len(diff.unaligned_a)} of A, {len(diff.unaligned_b)} of B")  # fmt: skip
    m[1].metric("Jaccard (members)", f"{diff.jaccard:.2f}")
    m[2].metric(f"Top-{diff.top_k} Jaccard", f"{diff.top_k_jaccard:.2f}")
    m[3].metric("Spearman of scores", f"{diff.spearman:.2f}")
    m[4].metric("Faithfulness A", f"{comp.faithfulness[0]['faithfulness']:.2f}")
    m[5].metric("Faithfulness B", f"{comp.faithfulness[1]['faithfulness']:.2f}")
    c1, c2, c3 = st.columns(3)
    events = []
    for col, circuit, name in ((c1, a, "A"), (c2, b, "B")):
        with col:
            events.append((circuit, st.plotly_chart(
                circuit_map_figure(circuit, f"{name}: {circuit.model_name} · {circuit.method}"),
                on_select="rerun", selection_mode="points", key=f"circ.map.{name}",
                width="stretch")))  # fmt: skip
    with c3:
        st.plotly_chart(circuit_delta_figure(diff, a.n_layers, a.n_heads), width="stretch")
    for circuit, event in events:
        cell = clicked_cell(event)
        if cell is not None:
            st.session_state["circ.selected"] = (
                circuit.model_name,
                map_node(*cell, circuit.n_heads),
            )
    selected = st.session_state.get("circ.selected")
    if selected and selected[1].split("H")[-1].isdigit():
        owner, node = selected
        layer, head = (int(x) for x in node[1:].split("H"))
        s1, s2 = st.columns([3, 1])
        s1.info(f"Selected {node} of {owner}.")
        if owner == model.name and s2.button(f"Open {node} in Attention", key="circ.open"):
            open_in_attention(model, layer, head)
    else:
        st.caption("Click a head in map A or B to select it and open it in the attention viewer.")
    st.plotly_chart(circuit_graph_figure(diff, a.n_layers, a.n_heads), width="stretch")
    st.subheader("Nodes by change")
    frame = diff.frame.assign(abs_delta=diff.frame["delta"].abs())
    st.dataframe(frame.sort_values("abs_delta", ascending=False), hide_index=True, width="stretch")
    st.subheader("Faithfulness")
    st.caption("Loss recovered when only the circuit runs and the rest of the scored nodes are "
               "ablated: 1 = the whole model, 0 = everything ablated.")  # fmt: skip
    st.dataframe(faithfulness_frame(comp), hide_index=True, width="stretch")


def faithfulness_frame(comp: Comparison) -> Any:
    """The faithfulness rows as a frame (circuit, data, losses, accuracy, faithfulness)."""
    import pandas as pd

    cols = ["circuit", "on", "faithfulness", "accuracy_faithfulness", "loss_full",
            "loss_circuit", "loss_empty", "accuracy_full", "accuracy_circuit", "members"]  # fmt: skip
    return pd.DataFrame([{k: r[k] for k in cols} for r in comp.faithfulness])


def render(model: LoadedModel) -> None:
    """Draw the circuit diffing page for ``model``."""
    st.header("Circuit diffing")
    st.caption(
        "Find a circuit twice and compare: the same model on two datasets, a task model at two "
        "training checkpoints or after fine-tuning, or two different models aligned by role. "
        "Overlap can be high while a circuit explains little, so faithfulness sits beside it."
    )
    mode = st.segmented_control("Compare", MODES, default=MODES[0], key="circ.mode") or MODES[0]
    settings = settings_input(model)
    build = {"Two datasets": _two_datasets, "Two checkpoints": _checkpoints,
             "Fine-tuned": _finetune, "Two models": _two_models}[mode]  # fmt: skip
    choice, run = build(model, settings)
    results = st.session_state.setdefault("circ.results", {})
    run_key = repr((model_key(model), mode, settings, choice))
    if st.button("Find and compare", type="primary", key="circ.run", icon=":material/compare:"):
        with st.spinner("Finding both circuits…"):
            results[run_key] = run()
    stored = results.get(run_key)
    if stored is None:
        st.info("Choose what to compare, then press **Find and compare**.", icon=":material/tune:")
    else:
        show_comparison(model, stored)
