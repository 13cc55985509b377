"""Compiled RASP models equal the interpreter; weights, head roles and errors are right."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from models.compiled import (
    build_hooked,
    list_library_programs,
    load_compiled,
    load_library_program,
    predict_batch,
    wrap_compiled,
)
from models.errors import UnknownModelError
from rasp import (
    Aggregate,
    Comparison,
    CompileError,
    LinearSequenceMap,
    Map,
    Select,
    SelectorOr,
    SelectorWidth,
    SequenceMap,
    UnsupportedProgramError,
    compile_program,
    evaluate,
    indices,
    library,
    numerical,
    tokens,
)
from rasp.compiler.graph import MAX_CATEGORICAL, collect_nodes
from tests.rasp_cases import CASES, outputs_match

torch.set_num_threads(1)
N_RANDOM = 1000


@pytest.fixture(scope="module", params=CASES, ids=[c.name for c in CASES])
def case_model(request):
    case = request.param
    return case, load_compiled(case.build(), case.vocab, case.max_seq_len, name=case.name)


def _disagreements(loaded, program, inputs):
    got = predict_batch(loaded, inputs)
    return [
        (x, g, evaluate(program, x))
        for x, g in zip(inputs, got)
        if not outputs_match(g, evaluate(program, x))
    ]


def test_case_table_inputs_match_interpreter(case_model):
    case, loaded = case_model
    program = case.build()
    assert _disagreements(loaded, program, [list(x) for x in case.inputs]) == []


def test_random_inputs_match_interpreter(case_model):
    case, loaded = case_model
    inputs = case.random_inputs(N_RANDOM, seed=1)
    assert {len(x) for x in inputs} == set(
        range(1, min(case.max_seq_len, len(case.vocab) if case.distinct else 99) + 1)
    )
    assert _disagreements(loaded, case.build(), inputs) == []


@pytest.mark.parametrize("case", [c for c in CASES if c.causal], ids=lambda c: c.name)
def test_causal_compilation_matches_interpreter(case):
    loaded = load_compiled(case.build(), case.vocab, case.max_seq_len, causal=True)
    assert loaded.cfg.attention_dir == "causal"
    assert _disagreements(loaded, case.build(), case.random_inputs(200, seed=2)) == []


@pytest.mark.parametrize(
    ("name", "given", "expected"),
    [
        ("reverse", [3, 1, 2, 2], [2, 2, 1, 3]),
        ("sort_unique", [3, 1, 5, 2], [1, 2, 3, 5]),
        ("hist", [1, 2, 1, 3], [2, 1, 2, 1]),
        ("sort", [3, 1, 3, 2], [1, 2, 3, 3]),
        ("sort_freq", [2, 3, 2, 1], [2, 2, 3, 1]),
        ("length", [1, 2, 3], [3, 3, 3]),
        ("count_a", list("aaabbc"), [3] * 6),
        ("detect_pattern", list("abcabc"), [False, False, True, False, False, True]),
        ("shuffle_dyck", list("(())"), [True] * 4),
        ("shuffle_dyck2", list("({)}"), [True] * 4),
    ],
)
def test_tracr_table_examples(name, given, expected):
    assert load_library_program(name).predict(given) == expected


@pytest.mark.parametrize(
    ("name", "given", "expected"),
    [
        ("frac_prevs", list("xyx"), [1, 0.5, 2 / 3]),
        ("pair_balance", list("(())"), [1, 1, 1 / 3, 0]),
    ],
)
def test_tracr_table_numerical_examples(name, given, expected):
    got = load_library_program(name).predict(given)
    assert np.allclose(got, expected, atol=1e-4, rtol=0)


def test_weights_have_transformer_lens_names_and_shapes():
    cp = compile_program(library.make_reverse(), [1, 2, 3], 5)
    c = cp.config
    assert (c["n_ctx"], c["d_vocab"], c["d_vocab_out"], c["act_fn"]) == (6, 4, 3, "relu")
    assert c["normalization_type"] is None and c["attention_dir"] == "bidirectional"
    assert cp.weights["embed.W_E"].shape == (4, c["d_model"])
    assert cp.weights["blocks.3.attn.W_Q"].shape == (c["n_heads"], c["d_model"], c["d_head"])
    assert cp.weights["blocks.0.mlp.W_out"].shape == (c["d_mlp"], c["d_model"])
    assert all(w.dtype == np.float32 for w in cp.weights.values())
    assert len(cp.residual_labels) == c["d_model"]
    assert {"one", "tokens:BOS", "tokens:3", "indices:4", "length:5", "reverse:2"} <= set(
        cp.residual_labels
    )
    assert cp.input_vocab == ("BOS", 1, 2, 3) and cp.output_space == (1, 2, 3)
    state = build_hooked(cp).state_dict()
    for name, w in cp.weights.items():
        assert torch.equal(state[name], torch.from_numpy(w)), name


def test_layer_allocation_matches_tracr_reverse():
    cp = compile_program(library.make_reverse(), [1, 2, 3], 5)
    assert cp.sizes()["layers"] == 4 and cp.sizes()["heads"] == 1
    assert cp.head_exprs == {"L0H0": "length", "L3H0": "reverse"}
    assert cp.mlp_exprs == {"L0.mlp": ("length",), "L1.mlp": ("opp_idx",), "L2.mlp": ("opp_idx-1",)}
    assert cp.head_roles["L3H0"] == "select(indices, opp_idx-1, EQ) aggregate tokens -> reverse"


def test_independent_heads_share_a_layer():
    cp = compile_program(library.make_pair_balance(), ["(", ")"], 6)
    assert cp.sizes()["layers"] == 2 and cp.sizes()["heads"] == 2
    assert sorted(cp.head_exprs.values()) == ["frac_(", "frac_)"]


def _ablate_changes(loaded, head: str, inputs) -> bool:
    layer, index = (int(x) for x in head[1:].split("H"))

    def zero(z, hook):
        z[:, :, index] = 0.0
        return z

    by_len: dict[int, list] = {}
    for x in inputs:
        by_len.setdefault(len(x), []).append(x)
    for group in by_len.values():
        tokens_ = loaded.codec.to_tokens(group)
        clean = loaded.model(tokens_)
        hooked = loaded.model.run_with_hooks(
            tokens_, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)]
        )
        if not torch.allclose(clean, hooked, atol=1e-4):
            return True
    return False


@pytest.mark.parametrize("name", ["reverse", "sort_freq", "shuffle_dyck2"])
def test_head_roles_ablation(name):
    """Heads of expressions the output uses matter; dead-branch and empty heads don't."""
    entry = library.LIBRARY[name]
    program = entry.build()
    dead = SelectorWidth(Select(tokens, tokens, Comparison.GT).named("dead_sel")).named(
        "dead_width"
    )
    cp = compile_program(program, entry.vocab, entry.max_seq_len, also_compile=[dead])
    loaded = wrap_compiled(cp, name)
    inputs = [x for x in _case(name).random_inputs(150, seed=3)]
    used = {e.label for e in collect_nodes([program])}
    assert cp.heads_of("dead_width"), "the dead branch must get a head"
    for head, label in cp.head_exprs.items():
        assert _ablate_changes(loaded, head, inputs) == (label in used), (head, label)
    all_heads = {
        f"L{layer}H{h}"
        for layer in range(cp.config["n_layers"])
        for h in range(cp.config["n_heads"])
    }
    for head in sorted(all_heads - set(cp.head_exprs))[:4]:
        assert not _ablate_changes(loaded, head, inputs), head


def _case(name):
    return next(c for c in CASES if c.name == name)


def test_unsupported_program_lists_every_offender():
    num = numerical(Map(lambda t: t, tokens)).named("num_tok")
    bad_select = SelectorWidth(Select(num, tokens, Comparison.EQ).named("num_keys"))
    bad_or = SelectorWidth(
        SelectorOr(
            Select(tokens, tokens, Comparison.EQ), Select(indices, indices, Comparison.LT)
        ).named("mixed_or")
    )
    mixed = SequenceMap(lambda a, b: a + b, num, tokens).named("mixed_map")
    program = SequenceMap(lambda *xs: 0, SequenceMap(lambda a, b: a, bad_select, bad_or), mixed)
    with pytest.raises(UnsupportedProgramError) as err:
        compile_program(program, [1, 2, 3], 4)
    labels = {label for label, _ in err.value.problems}
    assert labels == {"num_keys", "mixed_or", "mixed_map"}
    assert "numerical" in str(err.value) and "mixed_or" in str(err.value)


def test_causal_rejects_programs_that_look_ahead():
    with pytest.raises(UnsupportedProgramError, match="flip"):
        compile_program(library.make_reverse(), [1, 2, 3], 5, causal=True)


def test_map_with_too_many_values_is_rejected():
    wide = SequenceMap(lambda a, b: a * 100 + b, tokens, indices).named("wide")
    with pytest.raises(UnsupportedProgramError, match=f"wide.*more than the {MAX_CATEGORICAL}"):
        compile_program(wide, list(range(30)), 30)


def test_numerical_mlp_on_unbounded_values_is_rejected():
    vals = numerical(Map(lambda t: t * 0.37, tokens)).named("vals")
    mean = numerical(Aggregate(Select(tokens, tokens, Comparison.LEQ), vals, default=0)).named(
        "mean"
    )
    mean2 = numerical(Aggregate(Select(indices, indices, Comparison.LEQ), mean, default=0)).named(
        "mean2"
    )
    with pytest.raises(UnsupportedProgramError, match="unbounded"):
        compile_program(Map(lambda x: x > 1, mean2).named("thresh"), list(range(1, 9)), 10)


def test_bad_compile_arguments_name_the_value():
    with pytest.raises(CompileError, match=r"max_seq_len.*0"):
        compile_program(tokens, [1], 0)
    with pytest.raises(CompileError, match="BOS"):
        compile_program(tokens, ["BOS", 1], 3)
    clash = SequenceMap(
        lambda a, b: a, Map(lambda x: x, tokens).named("x"), Map(lambda x: x, indices).named("x")
    )
    with pytest.raises(CompileError, match="'x'"):
        compile_program(clash, [1], 3)


def test_library_registry_loads_by_name():
    assert "reverse" in list_library_programs()
    loaded = load_library_program("reverse")
    assert loaded.kind == "rasp" and loaded.spec.text == "rasp:reverse"
    assert loaded.head_roles and "L3H0" in loaded.head_roles
    with pytest.raises(UnknownModelError, match="reverse"):
        load_library_program("nope")


def test_linear_sequence_map_numerical_output_is_exact():
    a = numerical(Map(lambda t: t, tokens)).named("a")
    b = numerical(Map(lambda i: i, indices)).named("b")
    loaded = load_compiled(LinearSequenceMap(a, b, 2, -0.5, name="lin"), [0, 1, 2], 4)
    assert np.allclose(loaded.predict([2, 0, 1]), [4, -0.5, 1], atol=1e-5)


def test_rasp_does_not_import_torch():
    code = "import sys, rasp; rasp.compile_program(rasp.library.make_sort(), [1, 2], 3); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
