"""Transformer Programs: training learns, decompiled code and compiled weights equal the program.

Oracle equalities on every shipped program's full test set: the decompiled Python module,
the discretised model and the ``program:<task>`` TransformerLens model give the same output
at every position. A tiny fit learns a previous-token task for real in seconds, a learned
program goes to RASP and through our interpreter and compiler unchanged, and bad files and
settings raise clear errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from models import load_model
from models.compiled import build_hooked, predict_batch
from models.errors import CheckpointError, UnknownModelError
from models.program_tasks import EOS, PROGRAM_TASKS, program_task
from models.programs import (
    WEIGHTS_FILE,
    load_program_model,
    read_program,
    read_test_set,
    save_program,
    shipped_program_dir,
)
from rasp import compile_program
from rasp.errors import ProgramConfigError, ProgramDataError
from rasp.programs import FitConfig, ProgramArchitecture, fit_program, make_data
from rasp.programs.decompile import decompile_program
from rasp.programs.discrete import discretise
from rasp.programs.to_rasp import program_to_rasp

SHIPPED = [name for name in PROGRAM_TASKS if (shipped_program_dir(name) / "config.json").is_file()]


def _module(source: str) -> dict:
    namespace: dict = {}
    exec(compile(source, "<decompiled>", "exec"), namespace)
    return namespace


def _model_outputs(model, vocab, seqs) -> list[list]:
    outs = []
    for length in sorted({len(s) for s in seqs}):
        group = [s for s in seqs if len(s) == length]
        tokens = torch.tensor([vocab.encode(s) for s in group])
        pred = model(tokens, hard=True).argmax(-1)[:, 1:]
        outs += [
            (tuple(s), [vocab.output_values[c] for c in row])
            for s, row in zip(group, pred.tolist())
        ]
    by_seq = dict(outs)
    return [by_seq[tuple(s)] for s in seqs]


@pytest.fixture(scope="module", params=SHIPPED)
def shipped(request):
    name = request.param
    folder = shipped_program_dir(name)
    stored = read_program(folder)
    program = discretise(stored.model, stored.vocab)
    tests = read_test_set(folder)
    run = _module(decompile_program(program, name))["run"]
    return name, stored, program, tests, [run(s) for s in tests]


def test_every_paper_task_ships_a_program():
    assert set(SHIPPED) == set(PROGRAM_TASKS)


def test_decompiled_program_equals_discretised_model_on_every_test_input(shipped):
    name, stored, _, tests, decompiled = shipped
    expected = _model_outputs(stored.model, stored.vocab, tests)
    disagree = [s for s, want, got in zip(tests, expected, decompiled) if got != want]
    assert len(tests) >= 1000
    assert disagree == []
    # The accuracy recorded at training time is the decompiled program's accuracy.
    task = program_task(name)
    hits = total = 0
    for s, got in zip(tests, expected):
        for want, y in zip(task.target(s), got):
            if want is not None:
                hits, total = hits + (want == y), total + 1
    assert hits / total == pytest.approx(stored.meta["metrics"]["test_acc"], abs=1e-12)


def test_program_model_equals_decompiled_program_on_every_test_input(
    shipped, monkeypatch, tmp_path
):
    name, _, _, tests, decompiled = shipped
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))  # no cached program: the shipped one
    loaded = load_model(f"program:{name}", train_missing=False)
    assert loaded.kind == "program" and loaded.head_roles
    got = predict_batch(loaded, tests)
    assert [s for s, g, want in zip(tests, got, decompiled) if g != want] == []


@dataclass(frozen=True)
class PreviousToken:
    """At each position, the token before it ('-' at the first): one head, positions -> p-1."""

    name: str = "previous"
    input_values: tuple = (1, 2, 3, 4)
    output_values: tuple = ("-", 1, 2, 3, 4)
    max_len: int = 5
    causal: bool = False

    def target(self, seq):
        return ["-", *seq[:-1]]

    def sample(self, n, rng):
        return [list(rng.integers(1, 5, size=int(rng.integers(1, 6)))) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_fit():
    config = FitConfig(ProgramArchitecture(1, 1, 0), epochs=40, batch_size=64, lr=5e-2,
                       dataset_size=600, seed=0)  # fmt: skip
    return fit_program(PreviousToken(), config, progress=False)


def test_tiny_fit_learns_the_previous_token_head(tiny_fit):
    assert tiny_fit.metrics["test_acc"] == 1.0
    assert tiny_fit.metrics["steps"] == 40 * 8 and not tiny_fit.metrics["interrupted"]
    program = discretise(tiny_fit.model, tiny_fit.vocab)
    (head,) = program.heads
    assert (head.q_var, head.k_var, head.v_var) == ("positions", "positions", "tokens")
    assert [head.pred[p] for p in range(1, 6)] == [0, 1, 2, 3, 4]
    source = decompile_program(program, "previous")
    assert "return k_position == q_position - 1" in source  # BOS query row listed apart
    assert _module(source)["run"]([3, 1, 4, 4]) == ["-", 3, 1, 4]


def test_fit_stops_when_asked_and_keeps_a_scored_program():
    calls = []
    fitted = fit_program(
        PreviousToken(),
        FitConfig(ProgramArchitecture(1, 1, 0), epochs=50, batch_size=64, dataset_size=300),
        progress=False,
        callback=lambda step, total, loss, tau: calls.append((step, total, tau)),
        should_stop=lambda: len(calls) >= 7,
    )
    assert fitted.metrics["interrupted"] and fitted.metrics["steps"] == 7
    assert calls[0][1] == 50 * 4 and calls[0][2] == pytest.approx(3.0)
    assert 0.0 <= fitted.metrics["test_acc"] <= 1.0
    assert fitted.metrics["device"] == "cpu"
    assert next(fitted.model.parameters()).device.type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_fit_on_a_missing_gpu_is_a_clear_error():
    with pytest.raises(ProgramConfigError, match="device='cuda' was asked for, but torch sees no"):
        fit_program(PreviousToken(), FitConfig(epochs=1, dataset_size=50), device="cuda")


def test_rasp_round_trip_interpreter_and_compiled_model_equal_the_program(tiny_fit):
    # A program with counting heads and both MLP kinds, all with a direct RASP form.
    task = program_task("hist")
    arch = ProgramArchitecture(2, n_heads_cat=0, n_heads_num=2, n_mlps_cat=1, n_mlps_num=1)
    fitted = fit_program(task, task.fit_config(architecture=arch, epochs=2, dataset_size=400),
                         progress=False)  # fmt: skip
    programs = [discretise(fitted.model, fitted.vocab), discretise(tiny_fit.model, tiny_fit.vocab)]
    tests = [list(fitted.data.test.sequences), [[1, 2, 3], [4], [2, 2, 1, 3, 4]]]
    for program, seqs in zip(programs, tests):
        emitted = program_to_rasp(program)
        assert emitted.complete, emitted.skipped
        module = _module(decompile_program(program))
        for s in seqs:
            assert emitted.outputs(s) == module["run"](s)
        names = [n for n in emitted.sops if n not in ("tokens", "positions", "ones")]
        compiled = compile_program(
            emitted.sops[names[-1]], list(range(program.vocab.n_tokens)), program.n_ctx,
            also_compile=[emitted.sops[n] for n in names[:-1]],
        )  # fmt: skip
        hooked = build_hooked(compiled)
        labels = compiled.residual_labels
        for s in seqs:
            ids = emitted.ids(s)
            _, cache = hooked.run_with_cache(torch.tensor([[0, *(i + 1 for i in ids)]]))
            resid = cache[f"blocks.{hooked.cfg.n_layers - 1}.hook_resid_post"][0, 1:]
            interpreted = emitted.evaluate_variables(s)
            for n in names:
                dims = [(i, lab.split(":", 1)[1]) for i, lab in enumerate(labels)
                        if lab.startswith(f"{n}:")]  # fmt: skip
                got = [
                    dims[int(resid[p, [i for i, _ in dims]].argmax())][1] for p in range(len(ids))
                ]
                assert got == [str(v) for v in interpreted[n]], n
        # ... and the variables the interpreter computes are the decompiled program's.
        trace = module["variables"](seqs[0])
        interpreted = emitted.evaluate_variables(seqs[0])
        for n in names:
            if n in trace and not n.startswith("num_attn"):
                assert [program.labels[n][x] for x in interpreted[n]] == trace[n]
            elif n in trace:
                assert interpreted[n] == trace[n]


def test_shipped_program_rasp_variables_equal_the_decompiled_ones(shipped):
    name, _, program, tests, _ = shipped
    emitted = program_to_rasp(program)
    parts = [p.name for p in (*program.heads, *program.mlps)]
    assert set(parts) == (set(emitted.sops) | set(emitted.skipped)) - {
        "tokens",
        "positions",
        "ones",
    }
    for reason in emitted.skipped.values():
        assert "closest" in reason or "no direct RASP form" in reason
    variables = _module(decompile_program(program, name))["variables"]
    for seq in tests[:50]:
        trace, interpreted = variables(seq), emitted.evaluate_variables(seq)
        for n in set(trace) & set(emitted.sops) - {"tokens", "positions", "ones"}:
            labels = program.labels.get(n)
            want = interpreted[n] if labels is None else [labels[x] for x in interpreted[n]]
            assert want == trace[n], (n, seq)


def test_corrupt_or_mismatched_program_files_raise_checkpoint_errors(tmp_path, tiny_fit):
    folder = save_program(tmp_path / "p", tiny_fit)
    assert read_program(folder).meta["metrics"]["test_acc"] == 1.0
    (folder / WEIGHTS_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        read_program(folder)
    folder = save_program(tmp_path / "q", tiny_fit)
    meta = json.loads((folder / "config.json").read_text())
    meta["architecture"]["n_heads_cat"] = 2
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"tensor .* has shape .* the architecture needs"):
        read_program(folder)
    meta["schema_version"] = 99
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="schema_version"):
        read_program(folder)
    with pytest.raises(CheckpointError, match="test set"):
        read_test_set(tmp_path / "missing")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ProgramArchitecture(n_layers=0), r"n_layers must be an int >= 1, got 0"),
        (lambda: ProgramArchitecture(n_heads_cat=0, n_heads_num=0), "at least one head"),
        (lambda: FitConfig(tau_init=0.1, tau_end=1.0), "tau_end <= tau_init"),
        (lambda: FitConfig(lr=-1), "lr must be a positive number"),
        (lambda: FitConfig(architecture="big"), "must be a ProgramArchitecture"),
    ],
)
def test_bad_config_is_a_clear_error(make, match):
    with pytest.raises(ProgramConfigError, match=match):
        make()


def test_bad_task_data_and_names_are_clear_errors():
    @dataclass(frozen=True)
    class Broken(PreviousToken):
        def target(self, seq):
            return ["?"] * len(seq)

    with pytest.raises(ProgramDataError, match=r"target '\?' is not an output value"):
        make_data(Broken(), 50, 0)
    with pytest.raises(UnknownModelError, match="valid: reverse, hist"):
        load_program_model("nonsense")


def test_paper_settings_adapt_the_tasks_without_changing_them():
    sort, dyck = program_task("sort"), program_task("dyck2")
    rng = np.random.default_rng(0)
    seqs = sort.sample(500, rng)
    assert all(s[-1] == EOS and 1 <= len(s) - 1 <= 6 and set(s[:-1]) <= set(range(5)) for s in seqs)
    assert sort.target([4, 0, 4, EOS]) == [0, 4, 4, None]
    assert {len(s) for s in dyck.sample(50, rng)} == {15}
    induction = program_task("induction")
    s = ["a", "1", "b", "2", "a", "1", "c", "3", "b"]
    assert induction.target(s) == ["?", None, "?", None, "1", None, "?", None, "2"]
    assert len(induction.sample(1, rng)[0]) == 9
