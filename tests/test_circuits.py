"""Circuits, their diffs and faithfulness; training snapshots and fine-tuning.

Ground truth: a compiled RASP model's circuit is known by construction (``head_roles``), so
running only it must keep the loss exactly, and removing one of its nodes must not.
Measured (200 random inputs, mean ablation): rasp:sort's role circuit has faithfulness 1.0
(loss 0.5514 with or without the rest, 0.9714 with every node ablated); rasp:reverse's exact
mean-ablation members are exactly its five role nodes; the integrated-gradients estimate ranks
rasp:reverse's nodes like the exact effects (Spearman 0.97).
"""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

from analysis.circuit_diff import diff_circuits
from analysis.circuits import (
    Circuit,
    circuit_from_gating,
    circuit_from_node_scores,
    model_circuit_from_roles,
    parse_node,
)
from analysis.errors import OptionError
from analysis.faithfulness import circuit_faithfulness
from analysis.head_gating import HeadGatingOptions, fit_head_gates
from analysis.node_attribution import node_attribution
from models import load_model
from models.errors import TrainingError
from models.finetune import finetune_task_model, train_snapshots
from probes.suites.data import codec_dataset


@pytest.fixture(scope="module")
def sort_model():
    lm = load_model("rasp:sort")
    return lm, codec_dataset(lm, 200, 0, "random sort inputs")


@pytest.fixture(scope="module")
def reverse_model():
    lm = load_model("rasp:reverse")
    return lm, codec_dataset(lm, 200, 0, "random reverse inputs")


def test_circuit_rejects_bad_ids_and_members() -> None:
    with pytest.raises(OptionError, match="bad node id 'L1X2'"):
        parse_node("L1X2")
    with pytest.raises(OptionError, match="members \\['L3H0'\\] are not among"):
        circuit_from_node_scores("m", 1, 1, {"L0H0": 1.0}, members=["L3H0"])
    with pytest.raises(OptionError, match="give top_k or threshold"):
        circuit_from_node_scores("m", 1, 1, {"L0H0": 1.0})
    with pytest.raises(OptionError, match="2 nodes but node_scores of shape \\(1,\\)"):
        Circuit("m", 1, 2, ("L0H0", "L0H1"), torch.zeros(1), frozenset(), "x", "d", "s")


def test_roles_circuit_is_exactly_faithful(sort_model) -> None:
    lm, data = sort_model
    circuit = model_circuit_from_roles(lm)
    assert circuit.member_nodes() == ["L0.mlp", "L1H0", "L1.mlp", "L2H0"]
    faith = circuit_faithfulness(lm, data, circuit)
    assert faith.ablated == ("L0H0", "L2.mlp")
    assert faith.loss_circuit == pytest.approx(faith.loss_full, abs=1e-6)
    assert faith.faithfulness == pytest.approx(1.0, abs=1e-6)
    assert faith.accuracy_circuit == 1.0 and faith.accuracy_empty < 0.7
    # Dropping the aggregate head loses most of the task.
    broken = circuit.with_members(["L0.mlp", "L1H0", "L1.mlp"])
    assert circuit_faithfulness(lm, data, broken).faithfulness < 0.5
    # Zero ablation agrees for this circuit: the unused head and MLP write nothing.
    assert circuit_faithfulness(lm, data, circuit, ablation="zero").faithfulness == pytest.approx(
        1.0
    )
    with pytest.raises(OptionError, match="unknown ablation 'median'"):
        circuit_faithfulness(lm, data, circuit, ablation="median")  # type: ignore[arg-type]


def test_chg_circuit_matches_compiled_circuit(sort_model) -> None:
    lm, data = sort_model
    fit = fit_head_gates(lm, data, options=HeadGatingOptions(steps=100, n_seeds=2, seed=0))
    found = circuit_from_gating(fit)
    diff = diff_circuits(model_circuit_from_roles(lm), found)
    assert found.member_nodes() == ["L1H0", "L2H0"]
    assert diff.jaccard == 1.0  # over the heads both scored
    assert diff.nodes_with("shared") == ["L1H0", "L2H0"]
    assert diff.nodes_with("absent") == ["L0H0"]
    assert set(diff.unaligned_a) == {"L0.mlp", "L1.mlp", "L2.mlp"}  # CHG gates heads only


def test_diff_statuses_overlaps_and_alignment() -> None:
    a = circuit_from_node_scores("m", 2, 2, {"L0H0": 1.0, "L0H1": 0.5, "L1H0": 0.0, "L1H1": 0.9},
                                 top_k=3, data_name="A")  # fmt: skip
    b = circuit_from_node_scores("m", 2, 2, {"L0H0": 1.0, "L0H1": 0.1, "L1H0": 0.8, "L1H1": 0.4},
                                 top_k=3, data_name="B")  # fmt: skip
    diff = diff_circuits(a, b)
    assert sorted(a.members) == ["L0H0", "L0H1", "L1H1"]
    assert sorted(b.members) == ["L0H0", "L1H0", "L1H1"]
    assert diff.nodes_with("added") == ["L1H0"]
    assert diff.nodes_with("removed") == ["L0H1"]
    assert diff.nodes_with("weakened") == ["L1H1"]  # 0.9 -> 0.4 of the same max 1.0
    assert diff.nodes_with("shared") == ["L0H0"]
    assert diff.jaccard == pytest.approx(2 / 4)
    assert diff.top_k == 3 and diff.top_k_jaccard == pytest.approx(2 / 4)
    assert diff.spearman == pytest.approx(
        spearmanr([1.0, 0.5, 0.0, 0.9], [1.0, 0.1, 0.8, 0.4]).statistic
    )
    # A different architecture aligned by role: b's L0H0 plays a's L1H1.
    c = circuit_from_node_scores("n", 1, 1, {"L0H0": 0.7}, top_k=1)
    cross = diff_circuits(a, c, alignment={"L0H0": "L1H1"}, confidence={"L0H0": 0.8}, tolerance=0.2)
    row = cross.frame.set_index("node").loc["L1H1"]
    assert row["node_b"] == "L0H0" and row["confidence"] == 0.8 and row["status"] == "shared"
    assert set(cross.unaligned_a) == {"L0H0", "L0H1", "L1H0"}
    with pytest.raises(OptionError, match="cannot be aligned by node id"):
        diff_circuits(a, c)
    with pytest.raises(OptionError, match="did not score"):
        diff_circuits(a, c, alignment={"L0H0": "L5H5"})


def test_graph_labels_every_node_of_a_small_diff_and_only_members_of_a_large_one() -> None:
    from analysis.figures.circuits import circuit_graph_figure

    def labelled(n_layers: int, n_heads: int) -> tuple[set[str], int]:
        nodes = [f"L{layer}H{head}" for layer in range(n_layers) for head in range(n_heads)]
        scores = {n: float(i == 0) for i, n in enumerate(nodes)}
        a = circuit_from_node_scores("m", n_layers, n_heads, scores, top_k=1)
        b = circuit_from_node_scores("m", n_layers, n_heads, {**scores, nodes[-1]: 2.0}, top_k=1)
        fig = circuit_graph_figure(diff_circuits(a, b), n_layers, n_heads)
        points = next(t for t in fig.data if t.mode == "markers+text")
        return {t for t in points.text if t}, len(points.hovertext)

    texts, hovers = labelled(2, 2)
    assert texts == {"L0H0", "L0H1", "L1H0", "L1H1"} and hovers == 4
    texts, hovers = labelled(30, 9)  # SmolLM2's 270 heads: only the two circuits' nodes
    assert texts == {"L0H0", "L29H8"} and hovers == 270


def test_exact_mean_ablation_finds_reverse_roles_and_ig_ranks_like_it(reverse_model) -> None:
    lm, data = reverse_model
    exact = node_attribution(lm, data, estimate="exact")
    assert set(exact.members) == set(lm.head_roles)  # L0H0 L3H0 L0.mlp L1.mlp L2.mlp
    ig = node_attribution(lm, data)
    rho = spearmanr(ig.node_scores, exact.node_scores).statistic
    assert rho > 0.85  # measured 0.97
    assert ig.top_nodes(1) == ["L3H0"]
    assert circuit_faithfulness(lm, data, exact).faithfulness == pytest.approx(1.0, abs=1e-6)


def test_snapshots_show_the_induction_circuit_forming() -> None:
    torch.manual_seed(0)
    (early, late), report = train_snapshots("induction", [0, 300], evaluate=300)
    assert report.steps_done == 300
    assert float(early.provenance["held_out_seq_acc"]) == 0.0
    assert float(late.provenance["held_out_seq_acc"]) >= 0.99
    data = codec_dataset(late, 150, 1, "induction inputs")
    c_early = node_attribution(early, data, estimate="exact", threshold=0.1)
    c_late = node_attribution(late, data, estimate="exact", threshold=0.1)
    diff = diff_circuits(c_early, c_late)
    # At initialisation no head matters much; after training both do (previous-token head
    # L0H0 and induction head L1H0), and each alone carries more than a nat per position.
    assert diff.nodes_with("added") == ["L0H0", "L1H0"]
    assert min(c_late.scores().values()) > 1.0
    assert max(abs(v) for v in c_early.scores().values()) < 0.2


def test_finetune_changes_the_task_and_checks_vocabularies() -> None:
    base = load_model("task:sort")
    tuned, report = finetune_task_model(base, "reverse", steps=200, lr=3e-3, evaluate=300)
    assert report.steps_done == 200 and tuned.name == "task:sort+reverse@200"
    assert tuned.model is not base.model
    assert base.predict([3, 1, 2]) == [1, 2, 3]  # the base model is untouched
    from models.tasks import get_task
    from models.training import evaluate_task_model

    before = evaluate_task_model(base.model, get_task("reverse"), n=300).token_acc
    after = evaluate_task_model(tuned.model, get_task("reverse"), n=300).token_acc
    assert after > before + 0.3
    with pytest.raises(TrainingError, match="model's d_vocab is 9 but task 'induction' needs 11"):
        finetune_task_model(base, "induction", steps=5)
    with pytest.raises(TrainingError, match="only task models"):
        finetune_task_model(load_model("rasp:sort"), "sort", steps=5)
