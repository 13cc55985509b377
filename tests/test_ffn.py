"""FFN sub-updates: the value-vector decomposition reproduces the MLP output on both backends."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from analysis.errors import HookNotFoundError, OptionError
from analysis.ffn import run_ffn_updates
from models import LoadedModel, ModelSpec, TaskCodec, load_model
from tests.hf_fixtures import save_tiny_llama


def task_model(attn_only: bool = False) -> LoadedModel:
    """A random HookedTransformer shaped like the task models (GELU MLP with a bias)."""
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, n_ctx=9, d_head=8, n_heads=4, d_mlp=64, d_vocab=9,
        d_vocab_out=8, act_fn="gelu", normalization_type="LN", seed=0, device="cpu",
        attn_only=attn_only,
    )  # fmt: skip
    model = HookedTransformer(cfg)
    if not attn_only:
        with torch.no_grad():  # TL initialises b_out to zero; make the bias term count
            for block in model.blocks:
                block.mlp.b_out.normal_(0.0, 0.5)
    codec = TaskCodec(vocab=("BOS", *range(8)), max_len=8, output_vocab=tuple(range(8)))
    return LoadedModel(model, ModelSpec.parse("task:sort"), "task", codec=codec)


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> LoadedModel:
    return load_model(save_tiny_llama(tmp_path_factory.mktemp("llama") / "tiny"))


def check_decomposition(lm, inputs, layer: int, position: int) -> None:
    d_mlp = lm.cfg.d_mlp
    full = run_ffn_updates(lm, inputs, layer=layer, position=position, k_vectors=d_mlp)
    assert sorted(full.indices.tolist()) == list(range(d_mlp))
    total = (full.activations[:, None] * full.vectors).sum(0) + full.b_out
    scale = float(full.mlp_out.abs().max())
    assert scale > 1e-3
    torch.testing.assert_close(total, full.mlp_out, atol=1e-5 * max(1.0, scale), rtol=1e-4)
    assert float(full.share_of_update.sum()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(("layer", "position"), [(0, -1), (1, 3)])
def test_sub_updates_sum_to_mlp_output_on_task_model(layer, position):
    lm = task_model()
    check_decomposition(lm, [3, 1, 4, 1, 5, 2, 6], layer, position)
    assert float(lm.model.blocks[layer].mlp.b_out.abs().max()) > 0.1  # the bias was counted


@pytest.mark.parametrize(("layer", "position"), [(0, -1), (1, 2)])
def test_sub_updates_sum_to_mlp_output_on_tiny_llama_bridge(llama, layer, position):
    assert type(llama.model).__name__ == "TransformerBridge"
    check_decomposition(llama, "w1 w5 w9 w13 w2 w7", layer, position)


def test_top_sub_updates_are_ranked_and_projected(llama):
    res = run_ffn_updates(llama, "w3 w8 w21 w34 w55", layer=1, k_vectors=5, k_tokens=4)
    assert res.position == 5 and res.tokens[0] == "<s>" and len(res.tokens) == 6
    torch.testing.assert_close(res.scores, res.activations.abs() * res.norms)
    assert bool((res.scores[:-1] >= res.scores[1:]).all())
    # the top-5 scores are the 5 largest of all d_mlp
    full = run_ffn_updates(llama, "w3 w8 w21 w34 w55", layer=1, k_vectors=llama.cfg.d_mlp)
    torch.testing.assert_close(res.scores, full.scores[:5])
    assert len(res.promoted_tokens) == 5 and all(len(t) == 4 for t in res.promoted_tokens)
    assert bool((res.promoted_logits[:, -1] >= res.suppressed_logits[:, -1]).all())
    assert bool((res.promoted_logits[:, :-1] >= res.promoted_logits[:, 1:]).all())
    frame = res.to_frame()
    assert list(frame["neuron"]) == res.indices.tolist() and len(frame) == 5
    assert res.to_dict()["prediction"] == res.prediction


def test_effect_on_prediction_adds_up_to_the_direct_logit_effect(llama):
    # sum over all sub-updates of m_i (v_i . W_U[:, pred]) = the MLP output's direct effect
    full = run_ffn_updates(llama, "w2 w4 w6 w8", layer=0, k_vectors=llama.cfg.d_mlp)
    pred = llama.model.to_single_token(full.prediction)
    w_u = llama.model.unembed.W_U.detach().float()
    direct = float((full.mlp_out - full.b_out) @ w_u[:, pred])
    assert float(full.effect_on_prediction.sum()) == pytest.approx(direct, rel=1e-3, abs=1e-5)


def test_bad_layer_position_and_attn_only_model():
    lm = task_model()
    with pytest.raises(OptionError, match="layer 5 is out of range"):
        run_ffn_updates(lm, [1, 2, 3], layer=5)
    with pytest.raises(OptionError, match="position 9 is out of range"):
        run_ffn_updates(lm, [1, 2, 3], layer=0, position=9)
    with pytest.raises(OptionError, match="k_vectors"):
        run_ffn_updates(lm, [1, 2, 3], layer=0, k_vectors=0)
    with pytest.raises(HookNotFoundError, match="hook_post"):
        run_ffn_updates(task_model(attn_only=True), [1, 2, 3], layer=0)
