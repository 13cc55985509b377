"""Linear probes and logit-lens accuracy: planted ground truth, controls, oracle rows, bad input.

Planted property: compiled ``rasp:hist`` writes "how often does this token occur" as a one-hot
categorical into the residual after block 0. Whether the last token occurred before is read
off that subspace linearly (final residual), and is absent from the embedding (``L0 in``, which
holds only the token and the position). Measured with the default options on 160 random
inputs: final 1.00 held out vs 0.57 shuffled control; ``L0 in`` 0.67, a little above the
majority baseline 0.61 because the position (= the length) makes a repeat more likely.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.errors import OptionError
from analysis.gating_data import task_data
from analysis.lens_accuracy import run_lens_accuracy
from analysis.linear_probes import LinearProbeOptions, collect_activations, run_linear_probes
from models import load_model
from models.compiled import predict_batch


@pytest.fixture(scope="module")
def hist():
    return load_model("rasp:hist")


def _duplicate_last(model, n: int, seed: int = 0) -> tuple[list[list[int]], list[bool]]:
    rng = np.random.default_rng(seed)
    values = list(model.codec.vocab[1:])
    seqs = []
    for _ in range(n):
        k = int(rng.integers(2, model.codec.max_len + 1))
        seqs.append([values[j] for j in rng.integers(0, len(values), size=k)])
    return seqs, [s[-1] in s[:-1] for s in seqs]


def test_probe_recovers_planted_property_far_above_control(hist):
    seqs, labels = _duplicate_last(hist, 160)
    result = run_linear_probes(hist, seqs, labels)
    frame = result.to_frame().set_index("layer")
    assert result.layer_labels == ["L0 in", "final"]
    assert frame.loc["final", "accuracy"] == pytest.approx(1.0)
    assert frame.loc["final", "control_accuracy"] < 0.7
    assert frame.loc["final", "selectivity"] > 0.3
    # The embedding holds token and position only: far below the final residual.
    assert frame.loc["L0 in", "accuracy"] < frame.loc["final", "accuracy"] - 0.25
    assert result.best_layer() == ("final", pytest.approx(1.0))
    assert sum(result.class_counts) == result.n_examples == 160


def test_probe_on_random_labels_is_at_chance(hist):
    seqs, _ = _duplicate_last(hist, 160)
    labels = np.random.default_rng(1).integers(0, 2, size=160).tolist()
    result = run_linear_probes(hist, seqs, labels, options=LinearProbeOptions(n_controls=1))
    assert float(result.accuracy.max()) < 0.66  # nothing to find: no better than chance + noise


def test_activations_keep_one_position_and_match_the_cache(hist):
    seqs = [[1, 2, 3], [3, 3, 1], [2, 1]]
    names = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post"]
    acts = collect_activations(hist, seqs, names, position=-1, batch_size=2)
    assert acts.shape == (2, 3, hist.cfg.d_model)
    for i, seq in enumerate(seqs):
        _, cache = hist.run_with_cache(hist.to_tokens(seq))
        for j, name in enumerate(names):
            assert torch.equal(acts[j, i], cache[name][0, -1])


def test_probe_bad_input_names_the_problem(hist):
    seqs, labels = _duplicate_last(hist, 40)
    with pytest.raises(OptionError, match="40 inputs but 39 labels"):
        run_linear_probes(hist, seqs, labels[:-1])
    with pytest.raises(OptionError, match="one class"):
        run_linear_probes(hist, seqs, [True] * 40)
    with pytest.raises(OptionError, match="has 1 examples; each class needs at least"):
        run_linear_probes(hist, seqs, [True] + [False] * 39)
    with pytest.raises(OptionError, match=r"position 9 is outside input 0"):
        run_linear_probes(hist, seqs, labels, options=LinearProbeOptions(position=9))
    with pytest.raises(OptionError, match=r"layer 3 is out of range; this model has layers 0..0"):
        run_linear_probes(hist, seqs, labels, options=LinearProbeOptions(layers=(3,)))
    with pytest.raises(OptionError, match="n_folds must be >= 2"):
        run_linear_probes(hist, seqs, labels, options=LinearProbeOptions(n_folds=1))


def test_lens_accuracy_final_row_is_the_model_itself():
    model = load_model("task:sort")
    from models.tasks import get_task

    task = get_task("sort")
    seqs = task.sample(48, np.random.default_rng(0))
    space = model.codec.output_vocab
    outs = [[space.index(v) for v in task.target(s)] for s in seqs]
    result = run_lens_accuracy(model, task_data(model, seqs, outs))
    predicted = predict_batch(model, seqs)
    own = np.mean([p == t for s, pr in zip(seqs, predicted) for p, t in zip(pr, task.target(s))])
    assert result.n_positions == sum(len(s) for s in seqs)
    assert float(result.accuracy[-1]) == pytest.approx(own, abs=1e-9)
    assert float(result.agreement[-1]) == 1.0
    assert float(result.kl_to_final[-1]) == pytest.approx(0.0, abs=1e-6)
    # Earlier layers cannot know the sorted output yet.
    assert float(result.accuracy[0]) < float(result.accuracy[-1]) - 0.3
    frame = result.to_frame()
    assert list(frame["layer"]) == [f"L{i} in" for i in range(model.cfg.n_layers)] + ["final"]


def test_activations_on_a_transformer_bridge_match_its_cache(tmp_path):
    """TransformerBridge hooks ``resid_pre`` through aliases whose ``hook.name`` differs."""
    from tests.hf_fixtures import save_tiny_llama

    lm = load_model(str(save_tiny_llama(tmp_path / "llama")))
    prompts = ["w1 w2 w3", "w4 w5", "w6 w7 w8"]
    names = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]
    acts = collect_activations(lm, prompts, names, position=-1)
    for i, prompt in enumerate(prompts):
        _, cache = lm.run_with_cache(lm.to_tokens(prompt), names_filter=lambda n: n in names)
        for j, name in enumerate(names):
            assert torch.allclose(acts[j, i], cache[name][0, -1].float(), atol=1e-5)
