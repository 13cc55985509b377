"""Tuned lens: identity == logit lens, fitted lenses beat it on held-out text, save/load, corpus."""

from __future__ import annotations

import random
import shutil

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from analysis.errors import OptionError
from analysis.lens import run_logit_lens
from analysis.tuned_lens import (
    TunedLens,
    TunedLensOptions,
    evaluate_lens_kl,
    fit_tuned_lens,
    run_tuned_lens,
)
from models import CheckpointError, LoadedModel, ModelSpec, TaskCodec, load_model
from models.corpus import load_corpus, split_corpus
from models.lenses import lens_dir, load_lens, save_lens
from tests.hf_fixtures import WORDS, save_tiny_llama

LENS_FIELDS = ("top_ids", "top_probs", "kl_to_final", "entropy", "target_prob", "target_rank")


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> LoadedModel:
    """The tiny Llama with blocks and final norm scaled up: sharp outputs that layers change a lot.

    (At its initial scale the outputs are nearly uniform and every lens KL is below 0.003 nats.)
    """
    from transformers import LlamaForCausalLM

    folder = save_tiny_llama(tmp_path_factory.mktemp("llama") / "tiny")
    hf = LlamaForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        for layer in hf.model.layers:
            layer.mlp.down_proj.weight.mul_(20.0)
            layer.self_attn.o_proj.weight.mul_(20.0)
        hf.model.norm.weight.mul_(50.0)
    hf.save_pretrained(folder)
    return load_model(folder)


def task_model(d_model: int = 32, seed: int = 0) -> LoadedModel:
    """A small random HookedTransformer shaped like the task models, with a task codec."""
    cfg = HookedTransformerConfig(
        n_layers=3, d_model=d_model, n_ctx=9, d_head=8, n_heads=4, d_mlp=64, d_vocab=9,
        d_vocab_out=8, act_fn="gelu", normalization_type="LN", seed=seed, device="cpu",
        initializer_range=0.3,
    )  # fmt: skip
    codec = TaskCodec(vocab=("BOS", *range(8)), max_len=8, output_vocab=tuple(range(8)))
    return LoadedModel(HookedTransformer(cfg), ModelSpec.parse("task:sort"), "task", codec=codec)


def llama_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 40))) for _ in range(n)]


def task_texts(n: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(8) for _ in range(8)] for _ in range(n)]


def assert_same_lens(a, b, atol: float = 1e-5) -> None:
    assert a.layer_labels == b.layer_labels and a.tokens == b.tokens
    assert a.top_tokens == b.top_tokens
    for name in LENS_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            torch.testing.assert_close(x.float(), y.float(), atol=atol, rtol=0, msg=name)


def test_identity_lens_equals_logit_lens_on_task_model():
    lm = task_model()
    seq = [3, 1, 4, 1, 5, 2, 6, 0]
    logit = run_logit_lens(lm, seq, target="4", k=5)
    tuned = run_tuned_lens(lm, TunedLens.identity(lm), seq, target="4", k=5)
    assert tuned.method == "tuned" and logit.kl_to_final[0].max() > 1e-3  # non-trivial rows
    assert_same_lens(logit, tuned)


def test_identity_lens_equals_logit_lens_on_tiny_llama(llama):
    prompt = "w1 w5 w9 w13 w2 w7"
    assert_same_lens(
        run_logit_lens(llama, prompt, target="w3"),
        run_tuned_lens(llama, TunedLens.identity(llama), prompt, target="w3"),
    )


@pytest.mark.parametrize(
    "options",
    [TunedLensOptions("ols", max_tokens=4000),
     TunedLensOptions("ols", max_tokens=4000, intercept=False),
     TunedLensOptions("kl", init="identity", max_tokens=2000, steps=60, lr=1e-2)],
    ids=["ols", "ols-no-intercept", "kl-from-identity"],
)  # fmt: skip
def test_fitted_lens_beats_logit_lens_on_held_out_text(llama, options):
    lens, report = fit_tuned_lens(llama, llama_texts(200, seed=0), options=options)
    held_out = llama_texts(60, seed=1)
    logit_kl = evaluate_lens_kl(llama, held_out)
    tuned_kl = evaluate_lens_kl(llama, held_out, lens)
    assert logit_kl.shape == (llama.cfg.n_layers + 1,)
    assert logit_kl[0] > 5.0  # the logit lens is far from the output at the first layer
    for layer in range(llama.cfg.n_layers):
        assert tuned_kl[layer] < 0.9 * logit_kl[layer], (layer, tuned_kl, logit_kl)
    assert tuned_kl[-1] == pytest.approx(0.0, abs=1e-5) and logit_kl[-1] == pytest.approx(
        0.0, abs=1e-5
    )
    assert report.n_tokens == options.max_tokens and lens.fitted_by == options.method
    if options.method == "kl":
        assert report.loss_history[-1] < report.loss_history[0]
    else:
        assert report.r2 is not None and bool((report.r2 <= 1).all()) and report.r2[-1] > 0.5


def test_ols_lens_beats_logit_lens_on_task_model():
    lm = task_model()
    lens, _ = fit_tuned_lens(
        lm, task_texts(400, 0), options=TunedLensOptions("ols", max_tokens=2500)
    )
    held_out = task_texts(100, 1)
    logit_kl, tuned_kl = evaluate_lens_kl(lm, held_out), evaluate_lens_kl(lm, held_out, lens)
    assert bool((tuned_kl[:-1] < logit_kl[:-1]).all()), (tuned_kl, logit_kl)


def test_progress_callback_and_bad_options(llama):
    seen = []
    fit_tuned_lens(llama, llama_texts(20, 2), options=TunedLensOptions(max_tokens=400, batch_size=2),
                   progress=lambda stage, done, total: seen.append((stage, done, total)))  # fmt: skip
    assert seen[-1] == ("ols", 400, 400) and len(seen) >= 3
    with pytest.raises(OptionError, match="unknown method 'sgd'"):
        TunedLensOptions("sgd")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="d_model=32"):
        run_tuned_lens(llama, TunedLens.identity(task_model()), "w1 w2")


@pytest.fixture
def saved(llama, tmp_path, monkeypatch):
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    lens, _ = fit_tuned_lens(llama, llama_texts(40, 3), options=TunedLensOptions(max_tokens=800))
    return lens, save_lens(llama, lens)


def test_save_load_round_trip(llama, saved):
    lens, folder = saved
    assert folder == lens_dir(llama) and str(folder).startswith(str(folder.parents[2]))
    loaded = TunedLens.from_state(*load_lens(llama))
    assert loaded.fitted_by == "ols" and loaded.fit_info["n_tokens"] == "800"
    prompt = "w4 w8 w15 w16 w23 w42"
    assert_same_lens(run_tuned_lens(llama, lens, prompt), run_tuned_lens(llama, loaded, prompt), 0)


def test_corrupt_lens_file_is_named(llama, saved):
    _, folder = saved
    (folder / "lens.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match=r"lens\.safetensors.*corrupt"):
        load_lens(llama)


def test_corrupt_meta_is_named(llama, saved):
    _, folder = saved
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"meta\.json is not valid JSON"):
        load_lens(llama)


def test_lens_of_other_width_is_refused(llama, saved, tmp_path):
    _, folder = saved
    other = task_model(d_model=32)
    other_lens, _ = fit_tuned_lens(
        other, task_texts(30, 0), options=TunedLensOptions(max_tokens=200)
    )
    other_folder = save_lens(other, other_lens)
    shutil.rmtree(folder)
    shutil.copytree(other_folder, folder)
    with pytest.raises(
        CheckpointError,
        match=r"meta\.json: field 'lens\.d_model' is '32'; this model has d_model=48",
    ):
        load_lens(llama)
    with pytest.raises(CheckpointError, match="d_model"):
        save_lens(llama, other_lens)


def test_missing_lens_and_retrained_model_get_no_stale_lens(llama, saved, tmp_path):
    retrained = load_model(save_tiny_llama(tmp_path / "seed1", seed=1))
    assert lens_dir(retrained) != lens_dir(llama)
    with pytest.raises(CheckpointError, match="no lens 'default'"):
        load_lens(retrained)


def test_from_state_names_missing_field():
    state, meta = TunedLens.identity(task_model()).to_state()
    del meta["d_model"]
    with pytest.raises(OptionError, match="'d_model'"):
        TunedLens.from_state(state, meta)


def test_corpus_is_non_trivial_and_split_is_deterministic_and_disjoint():
    texts = load_corpus()
    assert sum(len(t.encode()) for t in texts) > 100_000
    assert len(texts) > 500 and all(t.strip() for t in texts)
    assert any("To be, or not to be" in t for t in texts)
    train, held = split_corpus(texts, 0.2, seed=0)
    assert split_corpus(texts, 0.2, seed=0) == (train, held)
    assert split_corpus(texts, 0.2, seed=1) != (train, held)
    assert len(held) == round(0.2 * len(texts)) and len(train) + len(held) == len(texts)
    assert not set(train) & set(held)
    with pytest.raises(ValueError, match="held_out_fraction"):
        split_corpus(texts, 1.5)
