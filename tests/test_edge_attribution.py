"""Edge attribution patching against exact activation patching, on trained, compiled and
random models: exact where the metric is linear, the derivative of exact patching everywhere,
node = sum of its edges, and the induction circuit recovered on the trained induction model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from transformer_lens import HookedTransformer, HookedTransformerConfig

from analysis.activation_patching import activation_patching_edges, activation_patching_nodes
from analysis.edge_attribution import (
    corrupt_tokens,
    edge_attribution_patching,
    edge_attribution_scores,
    edge_graph,
    logit_diff_metric,
    target_logprob_metric,
)
from analysis.errors import OptionError
from models.loader import load_model
from models.tasks import get_task

INDUCTION_CIRCUIT = {"embed->L0H0", "L0H0->L1H0", "L1H0->logits"}


@pytest.fixture(scope="module")
def induction():
    return load_model("task:induction")


@pytest.fixture(scope="module")
def sort():
    return load_model("task:sort")


def random_model(**kw) -> HookedTransformer:
    """A small random model; weights large enough that its heads are far from linear."""
    cfg = dict(n_layers=2, d_model=32, n_ctx=16, d_head=8, n_heads=4, d_vocab=12, seed=0,
               initializer_range=0.4)  # fmt: skip
    return HookedTransformer(HookedTransformerConfig(**{**cfg, **kw})).eval()


def random_pair(vocab: int, rows: int = 4, pos: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randint(0, vocab, (rows, pos), generator=g) for _ in range(2))


def sort_pair(lm, rows: int, seed: int = 0):
    """Sort inputs of length 8, fully resampled corruptions, and the logit difference at the
    last position between the clean answer and the corrupted run's answer."""
    task = get_task("sort")
    clean = torch.cat([lm.to_tokens(s) for s in task.sample(rows, np.random.default_rng(seed), 8)])
    corrupted = corrupt_tokens(clean, lm.cfg.d_vocab, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        right, wrong = lm.model(clean)[:, -1], lm.model(corrupted)[:, -1]
    right_id = right.argmax(-1)
    wrong[torch.arange(rows), right_id] = -1e9  # where both agree, take the runner-up
    return clean, corrupted, logit_diff_metric(right_id, wrong.argmax(-1), -1)


def induction_pair(rows: int = 32, half: int = 6, seed: int = 0, resample_second: bool = False):
    """``[BOS, x, x]`` with ``x`` a random run of distinct tokens; the corruption redraws the
    first half (or both halves). The last token's earlier copy was followed by ``x[0]``."""
    g = torch.Generator().manual_seed(seed)
    draw = lambda: torch.stack([torch.randperm(10, generator=g)[:half] + 1 for _ in range(rows)])  # noqa: E731
    x, y, bos = draw(), draw(), torch.zeros(rows, 1, dtype=torch.long)
    clean = torch.cat([bos, x, x], 1)
    corrupted = torch.cat([bos, y, y if resample_second else x], 1)
    return clean, corrupted, x[:, 0] - 1, y[:, 0] - 1  # output classes are value ids


def test_graph_follows_the_forward_order(induction, sort):
    assert edge_graph(induction).edges == (
        "embed->L0H0", "embed->L1H0", "embed->logits", "L0H0->L1H0", "L0H0->logits",
        "L1H0->logits",
    )  # fmt: skip
    graph = edge_graph(sort)
    # embed feeds 7 readers, each L0 head 5 (L0.mlp, L1H0, L1H1, L1.mlp, logits), L0.mlp 4,
    # each L1 head 2, L1.mlp 1.
    assert len(graph.edges) == 7 + 5 + 5 + 4 + 2 + 2 + 1
    assert "L0H1->L0.mlp" in graph.edges and "L0.mlp->L0H1" not in graph.edges
    assert "L1H0->L1H1" not in graph.edges


@pytest.mark.parametrize("name", ["random attn-only, no LayerNorm", "rasp:reverse"])
def test_exact_where_the_metric_is_linear(name):
    """No final LayerNorm and a logit difference: M is linear in the last residual stream, so
    an edge into the logits has exactly its first-order effect (not so for edges into heads)."""
    if name == "rasp:reverse":
        model = load_model(name)
    else:
        model = random_model(attn_only=True, normalization_type=None)
    clean, corrupted = (t + 1 for t in random_pair(model.cfg.d_vocab - 1, pos=6))
    clean[:, 0] = corrupted[:, 0] = 0  # BOS first (the compiled model's context is 6)
    metric = logit_diff_metric([0, 1, 2, 0], [1, 2, 0, 2], -1)
    eap = edge_attribution_patching(model, clean, corrupted, metric).edge_score_map()
    exact = activation_patching_edges(model, clean, corrupted, metric).edge_score_map()
    into_logits = [e for e in eap if e.endswith("->logits")]
    assert max(abs(exact[e]) for e in into_logits) > 0.1
    assert max(abs(eap[e] - exact[e]) for e in into_logits) < 1e-4
    if name != "rasp:reverse":  # the random heads are not linear in their inputs
        assert max(abs(eap[e] - exact[e]) for e in eap if e not in into_logits) > 1e-2


@pytest.mark.parametrize("name", ["task:sort", "random GQA (4 heads, 2 kv heads)"])
def test_eap_is_the_derivative_of_exact_patching(name, sort):
    """``(M(+e) - M(-e)) / 2e`` of patching ``e`` times the difference is what EAP computes,
    for every edge and node, including a grouped-query model's per-head k/v inputs."""
    if name == "task:sort":
        model, (clean, corrupted, metric) = sort, sort_pair(sort, rows=16)
    else:
        model = random_model(n_key_value_heads=2, d_mlp=64, act_fn="gelu",
                             normalization_type="RMS", positional_embedding_type="rotary")  # fmt: skip
        clean, corrupted = random_pair(12)
        metric = logit_diff_metric([1, 2, 3, 4], [5, 6, 7, 8], -1)
    eap = edge_attribution_scores(model, clean, corrupted, metric)
    e = 1e-3
    up = activation_patching_edges(model, clean, corrupted, metric, scale=e)
    down = activation_patching_edges(model, clean, corrupted, metric, scale=-e)
    slope = (up.edge_scores - down.edge_scores) / (2 * e)
    node_slope = (up.node_scores - down.node_scores) / (2 * e)
    assert eap.edge_scores.abs().max() > 0.5
    # measured: at most 3.6e-3 off (task:sort, scores up to 7.6), 2e-4 (GQA)
    torch.testing.assert_close(slope, eap.edge_scores, atol=1e-2, rtol=1e-3)
    torch.testing.assert_close(node_slope, eap.node_scores, atol=1e-2, rtol=1e-3)
    assert up.edges == eap.graph.edges and up.nodes == eap.graph.nodes
    assert not model.cfg.ungroup_grouped_query_attention and not model.cfg.use_split_qkv_input


@pytest.mark.parametrize("ig_steps", [1, 5])
def test_node_score_is_the_sum_of_its_outgoing_edges(sort, ig_steps):
    """dM/da_u is the sum of dM/d(input_v) over u's consumers (the residual stream is a sum),
    computed here by two separate gradients: at hook_z / hook_mlp_out and at the readers."""
    eap = edge_attribution_scores(sort, *sort_pair(sort, rows=16), ig_steps=ig_steps)
    graph = eap.graph
    sums = torch.zeros(len(graph.upstream)).index_add_(0, graph.src, eap.edge_scores)[1:]
    scale = float(eap.node_scores.abs().max())
    assert scale > 0.5
    # float32 throughout: measured 7e-6 at scale 7.6, i.e. 1e-6 relative
    torch.testing.assert_close(sums, eap.node_scores, atol=1e-5 * scale, rtol=0)
    qkv = eap.qkv_scores.nansum(0)[~eap.qkv_scores[0].isnan()]
    torch.testing.assert_close(qkv, eap.edge_scores[~eap.qkv_scores[0].isnan()])


def test_eap_ranks_edges_like_exact_patching_on_task_sort(sort):
    clean, corrupted, metric = sort_pair(sort, rows=128)
    exact = activation_patching_edges(sort, clean, corrupted, metric)
    eap = edge_attribution_patching(sort, clean, corrupted, metric)
    eap_ig = edge_attribution_patching(sort, clean, corrupted, metric, ig_steps=5)
    # measured 0.904 (EAP) and 0.988 (EAP-IG, 5 steps) over the 26 edges
    assert spearmanr(eap.edge_scores, exact.edge_scores).statistic > 0.8
    assert spearmanr(eap_ig.edge_scores, exact.edge_scores).statistic > 0.95
    assert eap.method == "eap" and eap_ig.method == "eap-ig"
    assert exact.method == "activation_patching"


def test_induction_circuit_on_the_trained_induction_model(induction):
    """Corrupting the first half leaves the current token but breaks the earlier copy it keys
    on. Exact patching finds the induction circuit and nothing else: L0H0 (previous-token
    head) reads the token (embed->L0H0), L1H0 keys on it (L0H0->L1H0) and writes the answer
    (L1H0->logits). EAP-IG recovers it with the letters (k for the composition, v for the
    previous-token copy); plain EAP finds only L1H0->logits: the attention is saturated, so
    the gradient through L1H0's softmax is near zero (the known first-order failure)."""
    clean, corrupted, right, _ = induction_pair()
    with torch.no_grad():
        wrong = induction.model(corrupted)[:, -1]
    wrong[torch.arange(len(right)), right] = -1e9
    metric = logit_diff_metric(right, wrong.argmax(-1), -1)
    exact = activation_patching_edges(induction, clean, corrupted, metric).edge_score_map()
    assert set(sorted(exact, key=lambda e: -abs(exact[e]))[:3]) == INDUCTION_CIRCUIT
    assert min(abs(exact[e]) for e in INDUCTION_CIRCUIT) > 5  # measured 10.8 .. 17.7
    assert max(abs(v) for e, v in exact.items() if e not in INDUCTION_CIRCUIT) < 2  # 1.38
    ig = edge_attribution_scores(induction, clean, corrupted, metric, ig_steps=5)
    frame = ig.to_frame().set_index("edge")
    assert set(ig.to_circuit(top_k=3).edge_members) == INDUCTION_CIRCUIT
    assert frame.loc["L0H0->L1H0", "k"] / frame.loc["L0H0->L1H0", "score"] > 0.8  # 0.98
    assert frame.loc["embed->L0H0", "v"] / frame.loc["embed->L0H0", "score"] > 0.6  # 0.77
    eap = edge_attribution_patching(induction, clean, corrupted, metric)
    assert eap.top_edges(1) == ["L1H0->logits"]
    assert abs(eap.edge_score_map()["L0H0->L1H0"]) < 0.1 * abs(exact["L0H0->L1H0"])


def test_fully_resampled_induction_top_edge_is_the_induction_head_output(induction):
    clean, corrupted, right, wrong = induction_pair(resample_second=True, seed=1)
    metric = logit_diff_metric(right, wrong, -1)
    eap = edge_attribution_patching(induction, clean, corrupted, metric)
    exact = activation_patching_edges(induction, clean, corrupted, metric)
    assert eap.top_edges(1) == exact.top_edges(1) == ["L1H0->logits"]
    nodes = activation_patching_nodes(induction, clean, corrupted, metric)
    torch.testing.assert_close(nodes.node_scores, exact.node_scores)
    assert nodes.top_nodes(1) == ["L1H0"] and nodes.members == {"L1H0"}
    # default members: the top 10% of the 6 edges (one) and the nodes it touches
    assert eap.edge_members == {"L1H0->logits"} and eap.members == {"L1H0"}


def test_flags_are_restored_and_bad_inputs_raise(sort):
    cfg = sort.model.cfg
    before = (cfg.use_split_qkv_input, cfg.use_hook_mlp_in, cfg.use_attn_result)
    clean, corrupted, metric = sort_pair(sort, rows=4)
    edge_attribution_patching(sort, clean, corrupted, metric)
    activation_patching_edges(sort, clean, corrupted, metric, edges=["L1.mlp->logits"])
    with pytest.raises(OptionError, match=r"scalar tensor, got \(4,\)"):
        edge_attribution_patching(sort, clean, corrupted, lambda logits: logits[:, -1, 0])
    assert (cfg.use_split_qkv_input, cfg.use_hook_mlp_in, cfg.use_attn_result) == before
    with pytest.raises(OptionError, match=r"one shape, got \(4, 9\) and \(4, 8\)"):
        edge_attribution_patching(sort, clean, corrupted[:, :-1], metric)
    with pytest.raises(OptionError, match="ig_steps must be at least 1, got 0"):
        edge_attribution_patching(sort, clean, corrupted, metric, ig_steps=0)
    with pytest.raises(OptionError, match=r"unknown edges \['L1H0->L0H0'\]"):
        activation_patching_edges(sort, clean, corrupted, metric, edges=["L1H0->L0H0"])
    with pytest.raises(OptionError, match="3 ids or positions for a batch of 4"):
        edge_attribution_patching(sort, clean, corrupted, logit_diff_metric([1, 2, 3], 0))


def test_target_logprob_metric_and_corrupt_tokens(sort):
    targets = torch.tensor([[-100, 3, 1], [-100, -100, 7]])
    logits = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(0))
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    assert target_logprob_metric(targets)(logits).item() == pytest.approx(-loss.item(), abs=1e-6)
    with pytest.raises(OptionError, match="no supervised position"):
        target_logprob_metric(torch.full((1, 3), -100))
    tokens = torch.tensor([[0, 5, 6, 7, 0], [0, 1, 2, 0, 0]])
    out = corrupt_tokens(tokens, 9, lengths=torch.tensor([4, 3]),
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert out[:, 0].tolist() == [0, 0] and out[0, 4] == 0 and out[1, 3:].tolist() == [0, 0]
    assert bool(((out[:, 1:3] >= 1) & (out[:, 1:3] <= 8)).all())
    assert (out != tokens).sum() >= 3  # 5 real tokens redrawn from 8 values


def test_answer_metric_is_the_margin_of_the_clean_answer():
    from analysis.edge_attribution import answer_metric

    model = load_model("task:induction")
    clean = torch.tensor([[0, 3, 5, 7, 3, 5, 7]])
    logits = model(clean)
    top2 = logits[0, -1].topk(2).values
    # Clean and corrupted alike: the wrong answer is the runner-up, so the metric is the margin.
    margin = answer_metric(model, clean, clean)(logits)
    assert margin.item() == pytest.approx(float(top2[0] - top2[1]), abs=1e-5)
    assert margin.item() > 0
