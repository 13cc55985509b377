"""Tasks: exact targets on hand-worked cases, seeded samplers, the registry, and one trained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.errors import InputError, TrainingError, UnknownModelError
from models.tasks import PAD, TASKS, UNSEEN, get_task
from models.training import (
    ModelConfig,
    TrainConfig,
    build_model,
    evaluate_task_model,
    fast_forward,
    train_task_model,
)

# (task, input, expected output), worked by hand from the paper's definitions.
TARGET_CASES = [
    ("reverse", [3, 1, 2], [2, 1, 3]),
    ("reverse", [7], [7]),
    ("sort", [3, 1, 2, 1], [1, 1, 2, 3]),
    ("sort", [0, 7, 7, 0, 5], [0, 0, 5, 7, 7]),
    ("hist", [1, 2, 1, 1], [3, 1, 3, 3]),
    ("hist", [4, 5, 6], [1, 1, 1]),
    # counts a:2 b:2 c:1 -> two tokens have count 2, one has count 1
    ("double_hist", [0, 0, 1, 1, 2], [2, 2, 2, 2, 1]),
    ("double_hist", [3, 3, 3, 4], [1, 1, 1, 1]),
    ("double_hist", [1, 2, 3], [3, 3, 3]),
    # 1 twice, 3 twice (1 first seen earlier), then 2
    ("most_freq", [3, 1, 1, 3, 2], [3, 1, 2, PAD, PAD]),
    ("most_freq", [5, 6, 6], [6, 5, PAD]),
    ("most_freq", [2, 2, 2], [2, PAD, PAD]),
    ("dyck1", list("(())()"), list("PPPTPT")),
    ("dyck1", list("())(("), list("PTFFF")),
    ("dyck1", list(")("), list("FF")),
    ("dyck2", list("({})"), list("PPPT")),
    ("dyck2", list("({)}"), list("PPFF")),
    ("dyck2", list("{}((}"), list("PTPPF")),
    ("induction", [4, 7, 1, 4, 7, 1], [UNSEEN, UNSEEN, UNSEEN, 7, 1, 4]),
    ("induction", [5, 5, 5], [UNSEEN, 5, 5]),
    # the latest earlier occurrence wins: 2 was last followed by 9
    ("induction", [2, 3, 2, 9, 2], [UNSEEN, UNSEEN, 3, UNSEEN, 9]),
]


@pytest.mark.parametrize(("name", "seq", "expected"), TARGET_CASES)
def test_target_matches_hand_worked_case(name: str, seq: list, expected: list) -> None:
    assert get_task(name).target(seq) == expected


def test_registry_holds_the_paper_tasks_and_induction() -> None:
    expected = {"sort", "reverse", "hist", "double_hist", "most_freq", "dyck1", "dyck2"}
    assert expected | {"induction"} <= set(TASKS)


def test_unknown_task_lists_valid_names() -> None:
    with pytest.raises(
        UnknownModelError, match=r"unknown task 'sorted'; valid: reverse, sort, hist"
    ):
        get_task("sorted")


def test_target_rejects_value_outside_vocabulary() -> None:
    with pytest.raises(InputError, match="9"):
        get_task("sort").target([1, 9])


@pytest.mark.parametrize("name", sorted(TASKS))
def test_sampler_is_seeded_and_covers_the_lengths(name: str) -> None:
    task = TASKS[name]
    first = task.sample(300, np.random.default_rng(5))
    assert first == task.sample(300, np.random.default_rng(5))
    assert first != task.sample(300, np.random.default_rng(6))
    assert {len(s) for s in first} == set(task.lengths)
    assert all(set(s) <= set(task.input_values) for s in first)
    outputs = {v for s in first for v in task.target(s)}
    assert outputs <= set(task.output_values)


def test_sample_at_a_fixed_length_and_out_of_range() -> None:
    task = get_task("reverse")
    assert {len(s) for s in task.sample(20, np.random.default_rng(0), length=3)} == {3}
    with pytest.raises(InputError, match=r"length 9 is outside 1\.\.8"):
        task.sample(2, np.random.default_rng(0), length=9)


@pytest.mark.parametrize("name", ["dyck1", "dyck2"])
def test_dyck_sampler_mixes_balanced_and_random_strings(name: str) -> None:
    tags = [get_task(name).target(s) for s in get_task(name).sample(400, np.random.default_rng(1))]
    balanced_at_some_point = sum("T" in t for t in tags) / len(tags)
    invalid_at_first = sum(t[0] == "F" for t in tags) / len(tags)
    # Balanced strings (half the samples) reach T; a random string opens with a closer 1/2 of
    # the time, a balanced one never does.
    assert balanced_at_some_point > 0.5
    assert 0.15 < invalid_at_first < 0.35


def test_induction_samples_repeat_a_distinct_prefix() -> None:
    for seq in get_task("induction").sample(200, np.random.default_rng(2)):
        target = get_task("induction").target(seq)
        first_repeat = next((i for i, t in enumerate(target) if t != UNSEEN), len(seq))
        assert len(set(seq[:first_repeat])) == first_repeat
        assert all(seq[i] == seq[i - first_repeat] for i in range(first_repeat, len(seq)))


def test_codec_and_model_shapes_follow_the_task() -> None:
    task = get_task("most_freq")
    codec = task.codec()
    assert codec.vocab[1:] == task.input_values and codec.output_vocab == task.output_values
    model = build_model(task)
    assert (model.cfg.d_vocab, model.cfg.d_vocab_out, model.cfg.n_ctx) == (9, 9, 9)
    assert model.cfg.attention_dir == "bidirectional"
    assert build_model(get_task("induction")).cfg.attention_dir == "causal"


@pytest.mark.parametrize(
    "model_config",
    [
        ModelConfig(),
        ModelConfig(normalization="LNPre", act_fn="gelu"),
        ModelConfig(normalization=None, attn_only=True),
    ],
)
@pytest.mark.parametrize("name", ["sort", "dyck2"])
def test_fast_forward_equals_hooked_forward_with_padding(
    name: str, model_config: ModelConfig
) -> None:
    task = get_task(name)
    model = build_model(task, model_config, seed=3)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn_like(param))
    seqs = [task.sampler(np.random.default_rng(i), n) for i, n in enumerate([task.max_len, 3, 1])]
    width = 1 + task.max_len
    in_ids = {v: i + 1 for i, v in enumerate(task.input_values)}
    tokens = torch.tensor([[0, *(in_ids[v] for v in s), *[0] * (width - 1 - len(s))] for s in seqs])
    fast = fast_forward(model, tokens, torch.tensor([len(s) for s in seqs]))
    for row, seq in enumerate(seqs):
        hooked = model(tokens[row : row + 1, : len(seq) + 1])[0]
        torch.testing.assert_close(fast[row, : len(seq) + 1], hooked, atol=1e-5, rtol=1e-5)


def test_invalid_train_settings_are_named() -> None:
    with pytest.raises(TrainingError, match="steps must be at least 1, got 0"):
        TrainConfig(steps=0)
    with pytest.raises(TrainingError, match="d_mlp"):
        ModelConfig(d_mlp=None)


def test_default_config_solves_dyck1_on_held_out_samples() -> None:
    torch.set_num_threads(1)
    task = get_task("dyck1")
    model, report = train_task_model(task, progress=False)
    result = evaluate_task_model(model, task, n=2000, seed=11)
    assert not report.interrupted and report.steps_done <= task.train_config.steps
    assert result.seq_acc >= 0.99, result
    assert result.token_acc >= 0.99
    # the tags of a causal model's prefix are the prefix's tags: shorter inputs work too
    codec = task.codec()
    for seq in task.sample(50, np.random.default_rng(12), length=16):
        short = seq[:7]
        logits = model(codec.to_tokens([short]))[0, 1:]
        assert [task.output_values[i] for i in logits.argmax(-1).tolist()] == task.target(short)


def test_training_is_reproducible_for_a_seed() -> None:
    task = get_task("hist")
    config = TrainConfig(steps=5, stop_after_perfect=None)
    a, report_a = train_task_model(task, config, progress=False)
    b, report_b = train_task_model(task, config, progress=False)
    assert report_a.losses == report_b.losses
    torch.testing.assert_close(a.W_E, b.W_E, atol=0, rtol=0)


def test_targets_and_inputs_of_every_task_vocabulary_kind():
    from models import load_model
    from models.errors import InputError
    from models.targets import NoTargetsError, output_ids, sample_inputs, target_function

    task = load_model("task:sort")
    seqs = sample_inputs(task, 20, 0, (3, 4))
    assert len(seqs) == 20 and {len(s) for s in seqs} <= {3, 4}
    assert [task.codec.output_vocab[i] for i in output_ids(task, seqs)[0]] == sorted(seqs[0])
    rasp = load_model("rasp:reverse")
    seq = sample_inputs(rasp, 1, 1, (4, 4))[0]
    assert target_function(rasp)(seq) == seq[::-1]
    program = load_model("program:sort")
    assert {len(s) for s in sample_inputs(program, 10, 0, (2, 3))} <= {2, 3}
    with pytest.raises(InputError, match=r"no length of task 'sort' lies in 20\.\.30"):
        sample_inputs(task, 5, 0, (20, 30))
    with pytest.raises(NoTargetsError, match="has no exact targets"):
        target_function(type("M", (), {"kind": "pretrained", "name": "gpt"})())
