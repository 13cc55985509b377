"""Head matching: identity on itself, a permuted copy recovered, and compiled vs trained sort.

Shared inputs: every sequence over the values both sort models accept ({1, 2, 3}: the
compiled ``rasp:sort`` vocabulary) of length 1..5 (its context minus BOS), 363 in all.

Measured (default options: effect similarity, mean-ablation, log-prob drop, Pearson, 50
input shuffles):

| A         | B          | kind      | pair        | similarity | margin | null z | p      |
|-----------|------------|-----------|-------------|------------|--------|--------|--------|
| task:sort | itself     | attention | identity    | 1.000      | >=0.11 | >=47.6 | 1/51   |
| task:sort | itself     | effect    | identity    | 1.000      | >=0.67 | >=18.4 | 1/51   |
| task:sort | itself     | both      | identity    | 1.000      | >=0.46 | >=18.6 | 1/51   |
| rasp:sort | task:sort  | effect    | L2H0 - L0H0 | 0.724      | 0.355  | 27.9   | 1/51   |
| rasp:sort | task:sort  | attention | L2H0 - L1H1 | 0.209      | -0.688 | 3.8    | 1/51   |
| rasp:sort | task:sort  | both      | L2H0 - L0H0 | 0.466      | 0.012  | 28.1   | 1/51   |

The compiled sort head L2H0 gathers the token of the right rank (one-hot rows); the trained
model's heads attend diffusely, so attention finds no partner for it (<= 0.21 to every head),
while the effect of ablating it correlates 0.72 with the effect of ablating the trained
L0H0, the head whose single ablation costs the trained model most (+6.87 nats; CHG on
these inputs keeps L0H0 and L0H1, see bench/circuits_sort.py). Averaging in attention
("both") keeps the pair but its margin drops to 0.012: the unused compiled head's uniform
rows look like the trained L0H0's diffuse ones (0.91), so it is not confident there.
"""

from __future__ import annotations

import copy
import itertools
import json

import pytest
import torch

from analysis.errors import OptionError
from analysis.figures.circuits_matching import matching_figure
from analysis.gating_ablation import single_head_ablation
from analysis.gating_data import task_data
from analysis.head_matching import HeadMatchingOptions, match_heads
from models import load_model
from models.tasks import get_task

KINDS = ("attention", "effect", "both")


@pytest.fixture(scope="module")
def task_sort():
    return load_model("task:sort")


@pytest.fixture(scope="module")
def rasp_sort():
    return load_model("rasp:sort")


@pytest.fixture(scope="module")
def shared(rasp_sort, task_sort):
    """Every sequence over the values both models accept, up to the shorter context."""
    values = sorted(set(rasp_sort.codec.vocab[1:]) & set(task_sort.codec.vocab[1:]))
    longest = min(rasp_sort.cfg.n_ctx, task_sort.cfg.n_ctx) - 1
    assert values == [1, 2, 3] and longest == 5
    return [list(s) for n in range(1, longest + 1) for s in itertools.product(values, repeat=n)]


@pytest.fixture(scope="module")
def compiled_vs_trained(rasp_sort, task_sort, shared):
    return match_heads(rasp_sort, task_sort, shared)


def _swap_heads(lm, layer: int, h1: int, h2: int):
    """A deep copy of ``lm`` with heads ``h1`` and ``h2`` of ``layer`` exchanged."""
    twin = copy.deepcopy(lm)
    attn = twin.model.blocks[layer].attn
    with torch.no_grad():
        for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V"):
            w = getattr(attn, name)
            w[[h1, h2]] = w[[h2, h1]].clone()
    return twin


@pytest.mark.parametrize("kind", KINDS)
def test_a_model_matched_with_itself_gives_the_identity_all_confident(task_sort, shared, kind):
    m = match_heads(task_sort, task_sort, shared, similarity=kind)
    heads = ["L0H0", "L0H1", "L1H0", "L1H1"]
    assert m.alignment() == {h: h for h in heads}  # every pair confident
    assert torch.allclose(m.similarity.diagonal(), torch.ones(4), atol=1e-5)
    for p in m.pairs:
        assert p.margin > 0.1, (kind, p)
        assert p.null_p == pytest.approx(1 / 51) and p.null_z > 10, (kind, p)


def test_a_copy_with_two_heads_swapped_is_matched_back(task_sort, shared):
    twin = _swap_heads(task_sort, 0, 0, 1)
    tokens = task_sort.to_tokens([3, 1, 2, 2])
    assert torch.allclose(task_sort.model(tokens), twin.model(tokens), atol=1e-5)
    assert not torch.equal(task_sort.model.blocks[0].attn.W_Q[0], twin.model.blocks[0].attn.W_Q[0])
    swapped = {"L0H0": "L0H1", "L0H1": "L0H0", "L1H0": "L1H0", "L1H1": "L1H1"}
    for kind in ("attention", "effect"):
        m = match_heads(task_sort, twin, shared, similarity=kind)
        assert m.alignment() == swapped, kind
        assert min(p.similarity for p in m.pairs) > 0.9999


def test_compiled_sort_head_matches_the_trained_head_ablation_says_matters(
    compiled_vs_trained, task_sort, shared
):
    m = compiled_vs_trained
    assert m.kind == "effect" and m.heads_a == ("L0H0", "L1H0", "L2H0")
    assert len(m.pairs) == 3  # 3 compiled heads, 4 trained: one trained head unmatched
    sort = m.pair("L2H0")
    assert sort.head_b == "L0H0" and sort.confident
    assert sort.similarity == pytest.approx(0.724, abs=0.03)
    assert sort.margin > 0.3 and sort.null_z > 15 and sort.null_p == pytest.approx(1 / 51)
    assert m.alignment() == {"L0H0": "L2H0"}  # the only confident pair
    # the unused compiled head does nothing: correlation 0 with every trained head
    assert torch.equal(m.similarity[0], torch.zeros(4)) and not m.pair("L0H0").confident
    # the trained L0H0 is the head whose ablation costs the trained model most
    task = get_task("sort")
    index = {v: i for i, v in enumerate(task.output_values)}
    data = task_data(task_sort, shared, [[index[v] for v in task.target(s)] for s in shared])
    cost = single_head_ablation(task_sort, data).flatten()
    assert int(cost.argmax()) == 0 and float(cost[0]) > 5.0 > 1.0 > float(cost[1:].max())


def test_attention_alone_finds_no_partner_for_the_compiled_sort_head(rasp_sort, task_sort, shared):
    m = match_heads(rasp_sort, task_sort, shared, similarity="attention")
    assert float(m.similarity[2].max()) < 0.25  # one-hot gather vs diffuse trained rows
    assert m.alignment() == {}
    # the compiled unused head attends uniformly: similar to the trained L0H0's diffuse rows
    # (0.91) but the same on every input, so the shuffle null cannot reject it
    unused = m.pair("L0H0")
    assert unused.similarity > 0.85 and unused.null_p == 1.0


def test_zero_ablation_of_a_compiled_head_carries_no_effect_signal(rasp_sort, task_sort, shared):
    m = match_heads(rasp_sort, task_sort, shared, options=HeadMatchingOptions(ablation="zero"))
    # either needed compiled head flattens every output: the same drop at every position
    assert torch.equal(m.similarity, torch.zeros(3, 4))
    assert m.alignment() == {}


def test_frame_dict_and_figure(compiled_vs_trained):
    m = compiled_vs_trained
    frame = m.to_frame()
    assert len(frame) == 12 and set(frame.columns) >= {"head_a", "head_b", "effect", "confident"}
    row = frame[(frame.head_a == "L2H0") & (frame.head_b == "L0H0")].iloc[0]
    assert row.matched and row.confident and row.similarity == pytest.approx(0.724, abs=0.03)
    assert m.pair_frame().confident.tolist() == [False, False, True]
    back = json.loads(json.dumps(m.to_dict()))
    assert back["alignment"] == {"L0H0": "L2H0"} and len(back["similarity"]) == 3
    fig = matching_figure(m)
    heat, filled = fig.data[0], fig.data[1]
    assert list(heat.y) == ["L0H0", "L1H0", "L2H0"] and list(heat.x) == list(m.heads_b)
    assert (list(filled.x), list(filled.y)) == (["L0H0"], ["L2H0"])
    assert filled.marker.symbol == "circle" and fig.data[2].marker.symbol == "circle-open"
    with pytest.raises(OptionError, match="attention"):
        matching_figure(m, "attention")


def test_bad_options_and_inputs_name_what_is_valid(task_sort):
    with pytest.raises(OptionError, match=r"'jaccard'.*attention, effect, both"):
        match_heads(task_sort, task_sort, [[1, 2]], similarity="jaccard")
    with pytest.raises(OptionError, match="input 1 is empty"):
        match_heads(task_sort, task_sort, [[1, 2], []])
    with pytest.raises(OptionError, match="no inputs"):
        match_heads(task_sort, task_sort, [])
    with pytest.raises(OptionError, match=r"'max'.*zero, mean"):
        match_heads(task_sort, task_sort, [[1]], options=HeadMatchingOptions(ablation="max"))
    m = match_heads(task_sort, task_sort, [[1, 2], [2, 1]], options=HeadMatchingOptions(n_null=0))
    assert all(p.null_p != p.null_p and not p.confident for p in m.pairs)  # NaN: no null
