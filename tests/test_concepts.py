"""Concept tracing: degradation levels do what they say, and on a model built so that the
concepts of an input are its distinct tokens, counts follow the constructed truth."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from analysis.concepts import (
    ConceptTraceOptions,
    UncertaintyLevel,
    default_levels,
    degrade,
    ngram_shuffle,
    random_replace,
    run_concept_trace,
)
from analysis.errors import OptionError
from analysis.hooks import resid_post
from analysis.sae import SAEConfig, SparseAutoencoder

V = 16  # vocabulary; id 0 is BOS


def one_hot_model() -> HookedTransformer:
    """resid_post(0) is the one-hot token: attention writes nothing, no positions, no norm."""
    cfg = HookedTransformerConfig(n_layers=1, d_model=V, n_ctx=64, d_head=4, n_heads=1, d_vocab=V,
                                  attn_only=True, normalization_type=None, seed=0)  # fmt: skip
    model = HookedTransformer(cfg)
    with torch.no_grad():
        model.W_E.copy_(torch.eye(V))
        model.W_pos.zero_()
        model.blocks[0].attn.W_O.zero_()
        model.blocks[0].attn.b_O.zero_()
    return model


def token_sae() -> SparseAutoencoder:
    """Latent t fires (value 1) exactly when the token is t."""
    sae = SparseAutoencoder(
        SAEConfig(d_in=V, d_sae=V, architecture="relu", hook_name=resid_post(0))
    )
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(V))
        sae.W_dec.copy_(torch.eye(V))
        sae.b_enc.fill_(-0.5)
        sae.b_dec.zero_()
    return sae


def structured_tokens(n: int = 40, pos: int = 24) -> torch.Tensor:
    """Inputs repeating a 3-token motif: 3 distinct concepts each."""
    rows = []
    for i in range(n):
        motif = [1 + (i + j) % 5 for j in range(3)]
        rows.append([0] + [motif[p % 3] for p in range(pos)])
    return torch.tensor(rows)


def test_ngram_shuffle_keeps_ngrams_and_tokens():
    ids = torch.arange(1, 13)
    out = ngram_shuffle(ids, 3, torch.Generator().manual_seed(1))
    assert sorted(out.tolist()) == ids.tolist()
    grams = {tuple(g.tolist()) for g in out.split(3)}
    assert grams == {(1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12)}
    assert out.tolist() != ids.tolist()


def test_random_replacement_nests_across_fractions():
    ids = torch.zeros(40, dtype=torch.long) + 1
    noise = torch.arange(2, 16)
    changed = []
    for f in (0.25, 0.5, 0.75, 1.0):
        out = random_replace(ids, f, noise, torch.Generator().manual_seed(7))
        changed.append(set((out != 1).nonzero().flatten().tolist()))
        assert len(changed[-1]) == round(40 * f)
    assert changed[0] <= changed[1] <= changed[2] <= changed[3]
    with pytest.raises(OptionError, match="fraction must be in"):
        random_replace(ids, 1.5, noise, torch.Generator())


def test_degrade_keeps_bos_and_noise_uses_noise_ids():
    tokens = structured_tokens(4)
    noisy = degrade(tokens, UncertaintyLevel("noise"), torch.tensor([9, 10]), seed=0)
    assert bool((noisy[:, 0] == 0).all()) and set(noisy[:, 1:].unique().tolist()) <= {9, 10}


def test_counts_follow_constructed_truth_under_replacement():
    """Concepts = distinct tokens; replacing more tokens by uniform noise adds distinct ones."""
    model, sae = one_hot_model(), token_sae()
    tokens = structured_tokens()
    trace = run_concept_trace(model, {0: sae}, tokens,
                              options=ConceptTraceOptions(method="replace", robust_rate=0.9))  # fmt: skip
    intact_distinct = [len(set(r[1:].tolist())) for r in tokens]
    assert float(trace.counts[0, 0]) == pytest.approx(sum(intact_distinct) / len(tokens))
    assert trace.monotone_layers() == [0]
    assert bool((trace.counts[0, 1:] > trace.counts[0, :-1]).all())  # strictly, here
    assert float(trace.counts[0, -1]) > 2.5 * float(trace.counts[0, 0])
    assert trace.overlap[0, 0] == 1.0 and bool((trace.overlap[0, 1:] < trace.overlap[0, :-1]).all())
    # pure noise over 15 ids at 24 positions hits most ids: all are noise-robust, none is BOS
    robust = {latent for latent, rate, _ in trace.robust[0]}
    assert robust and 0 not in robust and all(rate >= 0.9 for _, rate, _ in trace.robust[0])


def test_ngram_shuffles_leave_an_order_blind_models_concepts_unchanged():
    model, sae = one_hot_model(), token_sae()
    trace = run_concept_trace(model, {0: sae}, structured_tokens())
    assert trace.level_labels == [lv.label for lv in default_levels("shuffle")]
    shuffled = trace.counts[0, :-1]
    assert bool((shuffled == shuffled[0]).all()) and bool((trace.overlap[0, :-1] == 1).all())
    assert float(trace.counts[0, -1]) > 2 * float(trace.counts[0, 0])  # noise
    frame = trace.to_frame()
    assert len(frame) == len(trace.level_labels) and set(frame["layer"]) == {0}


def test_bad_levels_are_an_error():
    with pytest.raises(OptionError, match="first level must be 'intact'"):
        ConceptTraceOptions(levels=(UncertaintyLevel("noise"),)).resolved_levels()
    with pytest.raises(OptionError, match="unknown method 'blur'"):
        default_levels("blur")  # type: ignore[arg-type]
