"""SAEs: planted-feature recovery (calibrated so it can fail), dead latents, resume, metrics
oracles, streaming from a model, and the SAELens on-disk format in both directions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis.activations import activation_rows, capture, token_windows
from analysis.errors import HookNotFoundError, OptionError
from analysis.hooks import resid_post
from analysis.sae import SAEConfig, SparseAutoencoder
from analysis.sae_metrics import (
    evaluate_sae,
    gaussian_control,
    max_cosine,
    mean_max_cosine,
    planted_features,
)
from analysis.sae_training import (
    SAETrainOptions,
    SAETrainState,
    fit_sae,
    new_train_state,
    train_sae,
)
from models import CheckpointError, load_model
from models.saes import load_sae, load_train_state, save_sae, save_train_state
from tests.hf_fixtures import WORDS, save_tiny_llama


def shuffled_batches(data: torch.Tensor, batch: int = 256, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(data.shape[0], generator=gen)
        for i in range(0, data.shape[0] - batch + 1, batch):
            yield data[perm[i : i + batch]]


# -- recovery of planted features (PAPERS.md calibration) ----------------------------------------
@pytest.fixture(scope="module")
def planted():
    return planted_features(64, 32, p=0.04, n_samples=20_000, seed=0)


def test_topk_sae_recovers_planted_features(planted):
    data, truth = planted
    opts = SAETrainOptions(d_sae=128, architecture="topk", k=3, lr=3e-3, steps=1000,
                           batch_size=256, dead_window=20_000, seed=1)  # fmt: skip
    state = fit_sae(shuffled_batches(data), opts)
    cos = max_cosine(truth, state.sae.W_dec.detach())
    assert float(cos.mean()) > 0.99  # measured 0.999
    assert int((cos > 0.9).sum()) == 64
    assert state.summary()["l0"] <= 3.0 + 1e-6


def test_relu_l1_sae_recovers_planted_features(planted):
    data, truth = planted
    opts = SAETrainOptions(d_sae=128, architecture="relu", l1_coefficient=0.1, lr=3e-3,
                           steps=1500, batch_size=256, dead_window=20_000, seed=1)  # fmt: skip
    state = fit_sae(shuffled_batches(data), opts)
    assert mean_max_cosine(truth, state.sae.W_dec.detach()) > 0.93  # measured 0.964


def test_gaussian_control_recovers_nothing(planted):
    """Same covariance, no sparse structure: the recovery test must fail here."""
    data, truth = planted
    opts = SAETrainOptions(d_sae=128, architecture="topk", k=3, lr=3e-3, steps=1000,
                           batch_size=256, dead_window=20_000, seed=1)  # fmt: skip
    state = fit_sae(shuffled_batches(gaussian_control(data)), opts)
    cos = max_cosine(truth, state.sae.W_dec.detach())
    assert float(cos.mean()) < 0.7  # measured 0.54
    assert int((cos > 0.9).sum()) == 0


def test_decoder_rows_unit_norm_and_activations_scaled_to_unit_mean_square(planted):
    data, _ = planted
    data = data * 7.0
    opts = SAETrainOptions(d_sae=64, k=3, steps=30, batch_size=256, norm_batches=8)
    state = fit_sae(shuffled_batches(data), opts)
    norms = state.sae.W_dec.detach().norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones(64), atol=1e-5, rtol=0)
    scaled = data * state.sae.cfg.activation_scale
    assert abs(float(scaled.pow(2).sum(-1).mean()) - 1.0) < 0.05  # estimated on 8 batches


# -- dead latents ----------------------------------------------------------------------------------
def test_auxk_revives_dead_latents_and_improves_reconstruction():
    data, _ = planted_features(32, 32, p=0.04, n_samples=20_000, seed=0)
    out = {}
    for method in ("none", "auxk"):
        opts = SAETrainOptions(d_sae=48, architecture="topk", k=2, lr=3e-3, steps=1000,
                               batch_size=256, dead_window=2560, dead_handling=method)  # fmt: skip
        out[method] = fit_sae(shuffled_batches(data), opts).summary()
    # measured: dead 0.35 -> 0.07, FVE 0.926 -> 0.944
    assert out["none"]["dead_fraction"] > 0.25 and out["auxk"]["dead_fraction"] < 0.15
    assert out["auxk"]["fve"] > out["none"]["fve"] + 0.01


def test_resampling_brings_killed_relu_latents_back():
    data, truth = planted_features(32, 32, p=0.04, n_samples=20_000, seed=0)
    found = {}
    for method in ("none", "resample"):
        opts = SAETrainOptions(d_sae=48, architecture="relu", l1_coefficient=0.05, lr=3e-3,
                               steps=600, batch_size=256, dead_window=2560,
                               dead_handling=method, resample_every=100)  # fmt: skip
        state = new_train_state([data[:1024]], opts)
        with torch.no_grad():
            state.sae.b_enc[:24] = -10.0  # half the latents can never fire
        state = fit_sae(shuffled_batches(data), state=state)
        found[method] = (int((max_cosine(truth, state.sae.W_dec.detach()) > 0.9).sum()),
                         state.summary()["dead_fraction"])  # fmt: skip
    assert found["none"][1] > 0.45 and found["resample"][1] < 0.05  # measured 0.5 and 0.0
    assert found["resample"][0] >= found["none"][0] + 15  # measured 26 vs 3 features


# -- resuming and stopping ---------------------------------------------------------------------------
def test_resumed_training_equals_uninterrupted_training(tmp_path, planted):
    data, _ = planted
    batches = list(data[: 256 * 40].split(256))
    opts = SAETrainOptions(d_sae=64, architecture="relu", l1_coefficient=0.1, lr=3e-3, steps=40,
                           dead_window=1000, resample_every=10)  # fmt: skip
    straight = fit_sae(iter(batches), opts)
    half = fit_sae(iter(batches[:20]), opts)
    assert half.interrupted and half.step == 20  # the stream ran out
    save_train_state(tmp_path, half.to_state())
    resumed = SAETrainState.from_state(*load_train_state(tmp_path))
    resumed = fit_sae(iter(batches[20:]), state=resumed)
    assert resumed.step == 40 and not resumed.interrupted
    for name, p in straight.sae.named_parameters():
        torch.testing.assert_close(dict(resumed.sae.named_parameters())[name], p, atol=1e-6, rtol=0)
    assert resumed.curves["mse"] == pytest.approx(straight.curves["mse"], abs=1e-6)


def test_should_stop_interrupts_after_the_current_step(planted):
    data, _ = planted
    calls = []
    state = fit_sae(shuffled_batches(data), SAETrainOptions(d_sae=32, k=2, steps=100),
                    should_stop=lambda: len(calls) >= 5, progress=lambda s, t, m: calls.append(s))  # fmt: skip
    assert state.interrupted and state.step == 5 and calls == [1, 2, 3, 4, 5]


def test_bad_options_name_the_field():
    with pytest.raises(OptionError, match="unknown SAE architecture 'gated'"):
        SAETrainOptions(architecture="gated")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="k=99 is larger than d_sae=16"):
        SAETrainOptions(d_sae=16, k=99)
    with pytest.raises(OptionError, match="latent 16 is out of range"):
        SparseAutoencoder(SAEConfig(d_in=4, d_sae=16, k=4)).direction(16)


# -- on a model: streaming, early stop, metric oracles ------------------------------------------------
@pytest.fixture(scope="module")
def sort_model():
    return load_model("task:sort")


def sort_data(sort_model, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort inputs and their per-position output classes (-1 at BOS)."""
    from models.tasks import get_task

    task = get_task("sort")
    seqs = task.sample(n, np.random.default_rng(seed), length=8)
    index = {v: i for i, v in enumerate(sort_model.codec.output_vocab)}
    targets = torch.tensor([[-1] + [index[v] for v in task.target(s)] for s in seqs])
    return sort_model.codec.to_tokens(seqs), targets


@pytest.fixture(scope="module")
def sort_tokens(sort_model):
    return sort_data(sort_model, 96, 0)[0]


@pytest.fixture(scope="module")
def sort_targets(sort_model):
    return sort_data(sort_model, 96, 0)[1]


def identity_sae(d: int, hook: str) -> SparseAutoencoder:
    """relu([x, -x]) decoded by [I; -I] is x exactly: a perfect SAE."""
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=2 * d, architecture="relu", hook_name=hook))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_metrics_oracles_perfect_and_zero_saes(sort_model, sort_tokens, sort_targets):
    hook = resid_post(0)
    d = sort_model.cfg.d_model
    tokens, targets = sort_tokens[:32], sort_targets[:32]
    perfect = evaluate_sae(sort_model, identity_sae(d, hook), tokens, targets=targets)
    assert perfect.fve == pytest.approx(1.0, abs=1e-6) and perfect.mse < 1e-10
    assert perfect.ce_spliced == pytest.approx(perfect.ce_clean, abs=1e-5)
    assert perfect.ce_recovered == pytest.approx(1.0, abs=1e-4)
    assert perfect.ce_zero > perfect.ce_clean + 0.5  # zeroing the residual hurts
    zero = identity_sae(d, hook)
    with torch.no_grad():
        zero.W_dec.zero_()
    dead = evaluate_sae(sort_model, zero, tokens, targets=targets)
    assert dead.ce_spliced == pytest.approx(dead.ce_zero, abs=1e-5)
    assert dead.ce_recovered == pytest.approx(0.0, abs=1e-4)
    assert perfect.l0 == pytest.approx(d, abs=0.5)  # every coordinate is non-zero somewhere


def test_capture_stops_the_forward_pass_at_the_hook(sort_model, sort_tokens):
    later = []
    hooks = [(resid_post(sort_model.cfg.n_layers - 1), lambda a, hook: later.append(1))]
    with sort_model.hooks(fwd_hooks=hooks):
        acts = capture(sort_model, sort_tokens[:4], [resid_post(0)])[resid_post(0)]
    assert later == []  # the last block never ran
    _, cache = sort_model.run_with_cache(sort_tokens[:4], names_filter=resid_post(0))
    torch.testing.assert_close(acts, cache[resid_post(0)], atol=0, rtol=0)
    with pytest.raises(HookNotFoundError, match=r"no hook 'blocks\.0\.hook_banana'"):
        capture(sort_model, sort_tokens[:4], ["blocks.0.hook_banana"])


def test_activation_rows_read_every_token_once_per_epoch(sort_model, sort_tokens):
    hook = resid_post(0)
    rows = [r for r, _ in activation_rows(sort_model, sort_tokens[:20], hook, rows_per_batch=16,
                                          sequences_per_forward=3, buffer_rows=40, cycle=False)]  # fmt: skip
    got = torch.cat(rows)
    want = capture(sort_model, sort_tokens[:20], [hook])[hook][:, 1:].reshape(-1, got.shape[-1])
    assert got.shape == want.shape == (20 * 8, sort_model.cfg.d_model)
    assert max(r.shape[0] for r in rows) == 16
    dist = torch.cdist(got, want, compute_mode="donot_use_mm_for_euclid_dist")
    nearest = dist.argmin(-1)
    assert float(dist.min(-1).values.max()) < 1e-4  # every row is a captured row...
    assert sorted(nearest.tolist()) == list(range(want.shape[0]))  # ...each exactly once
    assert nearest.tolist() != list(range(want.shape[0]))  # and they come shuffled


def test_train_sae_streams_from_a_task_model(sort_model, sort_tokens, sort_targets):
    hook = resid_post(1)
    opts = SAETrainOptions(d_sae=128, k=8, steps=150, batch_size=128, lr=3e-3, seed=0)
    state = train_sae(sort_model, sort_tokens[:64], hook, opts)
    assert state.step == 150 and state.sae.cfg.hook_name == hook
    assert state.sae.cfg.model_name == "task:sort"
    metrics = evaluate_sae(sort_model, state.sae, sort_tokens[64:], targets=sort_targets[64:])
    assert metrics.fve > 0.8 and metrics.l0 <= 8.0
    assert metrics.ce_recovered > 0.5  # measured in the report
    assert state.curves["mse"][-1] < state.curves["mse"][0] / 3


# -- the SAELens on-disk format ---------------------------------------------------------------------
def random_sae(arch: str, seed: int = 0, scale: float = 0.37) -> SparseAutoencoder:
    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=64, architecture=arch, k=5,  # type: ignore[arg-type]
                                      activation_scale=scale, hook_name="blocks.0.hook_resid_post"),
                            seed=seed)  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(64, generator=gen) * 0.3)
        sae.b_dec.copy_(torch.randn(16, generator=gen))
    return sae


def assert_same_outputs(a, b, x: torch.Tensor) -> None:
    """Equal to float32 rounding: relative error below 1e-6 of the output scale."""
    for fa, fb in ((a.encode, b.encode), (a.forward, b.forward)):
        ya, yb = fa(x), fb(x)
        assert float((ya - yb).abs().max()) <= 1e-6 * float(ya.abs().max()) + 1e-6
        assert torch.equal(ya > 0, yb > 0)  # the same latents fire


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_our_sae_loads_in_saelens_with_identical_outputs(tmp_path, arch):
    from sae_lens import SAE

    ours = random_sae(arch)
    save_sae(tmp_path / "sae", ours.to_state())
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == {"topk": "topk", "relu": "standard"}[arch]
    theirs = SAE.load_from_disk(tmp_path / "sae")
    assert type(theirs).__name__ == {"topk": "TopKSAE", "relu": "StandardSAE"}[arch]
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(3)) * 3
    assert_same_outputs(ours, theirs, x)
    back = SparseAutoencoder.from_state(*load_sae(tmp_path / "sae"))
    assert back.cfg == ours.cfg  # the scale is unfolded again
    assert_same_outputs(ours, back, x)


@pytest.mark.parametrize(
    "arch, options",
    [("standard", {}), ("standard", {"apply_b_dec_to_input": False}), ("topk", {}),
     ("topk", {"rescale_acts_by_decoder_norm": True})],
)  # fmt: skip
def test_saelens_written_sae_loads_in_mechscope(tmp_path, arch, options):
    from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    if arch == "topk":
        theirs = TopKSAE(TopKSAEConfig(d_in=16, d_sae=64, k=6, **options))
    else:
        theirs = StandardSAE(StandardSAEConfig(d_in=16, d_sae=64, **options))
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # non-zero biases, non-unit decoder rows
    theirs.save_model(tmp_path / "theirs")
    ours = SparseAutoencoder.from_state(*load_sae(tmp_path / "theirs"))
    assert ours.cfg.architecture == {"topk": "topk", "standard": "relu"}[arch]
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(4)) * 2
    assert_same_outputs(theirs, ours, x)


def test_bad_sae_folders_name_the_file_and_field(tmp_path):
    save_sae(tmp_path / "ok", random_sae("topk").to_state())
    cfg_path = tmp_path / "ok" / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["architecture"] = "jumprelu"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="field 'architecture' is 'jumprelu'"):
        load_sae(tmp_path / "ok")
    save_sae(tmp_path / "cut", random_sae("topk").to_state())
    weights = tmp_path / "cut" / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"sae_weights\.safetensors is not a readable"):
        load_sae(tmp_path / "cut")
    with pytest.raises(CheckpointError, match=r"needs cfg\.json"):
        load_sae(tmp_path / "nothing")


# -- a bridge (pretrained) model --------------------------------------------------------------------
def test_train_and_evaluate_on_a_tiny_llama_bridge(tmp_path):
    lm = load_model(save_tiny_llama(tmp_path / "llama"))
    gen = torch.Generator().manual_seed(0)
    texts = [" ".join(WORDS[int(i)] for i in torch.randint(0, 60, (30,), generator=gen))
             for _ in range(30)]  # fmt: skip
    tokens = token_windows(lm, texts, 16)
    assert tokens.shape[1] == 16 and bool((tokens[:, 0] == tokens[0, 0]).all())
    hook = resid_post(0)
    state = train_sae(lm, tokens, hook, SAETrainOptions(d_sae=96, k=8, steps=60, batch_size=64))
    metrics = evaluate_sae(lm, state.sae, tokens[:8])
    assert metrics.n_tokens == 8 * 15 and metrics.l0 <= 8.0 and metrics.fve > 0.5


# -- feature dashboard ----------------------------------------------------------------------------
def test_feature_dashboard_of_a_coordinate_latent(sort_model, sort_tokens):
    """Latent j of the identity SAE is relu(x_j): its dashboard must match x_j read directly."""
    from analysis.sae_features import feature_dashboard, run_feature_activations

    hook = resid_post(1)
    d = sort_model.cfg.d_model
    sae = identity_sae(d, hook)
    tokens = sort_tokens[:40]
    acts = run_feature_activations(sort_model, sae, tokens)
    x = capture(sort_model, tokens, [hook])[hook][:, 1:]  # [seq, pos-1, d]
    j = 5
    dash = feature_dashboard(acts, sort_model, sae, j, n_snippets=4, context=2)
    assert dash.frequency == pytest.approx(float((x[..., j] > 0).float().mean()), abs=1e-9)
    assert dash.max_activation == pytest.approx(float(x[..., j].max()), rel=1e-5)
    top = dash.top_snippets[0]
    seq, pos = divmod(int(x[..., j].flatten().argmax()), x.shape[1])
    assert (top.sequence, top.position) == (seq, pos + 1)
    assert top.tokens[top.peak_index] == str(sort_model.codec.vocab[int(tokens[seq, pos + 1])])
    assert top.peak == pytest.approx(float(x[seq, pos, j]), rel=1e-5)
    assert len({s.sequence for s in dash.top_snippets}) == 4  # one snippet per window
    assert [s.peak for s in dash.top_snippets] == sorted(
        (s.peak for s in dash.top_snippets), reverse=True
    )
    assert int(dash.histogram[0].sum()) == int((x[..., j] > 0).sum())
    w_u = sort_model.model.W_U.detach()[j]  # the direction is the unit vector e_j
    best = sort_model.codec.output_vocab[int(w_u.argmax())]
    assert dash.promoted[0] == (str(best), pytest.approx(float(w_u.max()), rel=1e-5))
    assert dash.suppressed[0][1] == pytest.approx(float(w_u.min()), rel=1e-5)
