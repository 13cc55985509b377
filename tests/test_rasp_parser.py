"""Programs typed as text: examples equal the library, compile exactly; hostile text is refused."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from models.compiled import load_compiled, predict_batch
from rasp import LIBRARY, EvaluationError, Map, evaluate, tokens
from rasp.errors import RaspError, RaspParseError
from rasp.parser import PROGRAM_EXAMPLES, parse_program
from tests.rasp_cases import outputs_match

MAX_LEN = 4


def _all_inputs(vocab, max_len=MAX_LEN):
    return [list(x) for n in range(1, max_len + 1) for x in itertools.product(vocab, repeat=n)]


@pytest.mark.parametrize("name", sorted(PROGRAM_EXAMPLES))
def test_example_evaluates_like_library_program(name):
    entry = LIBRARY[name]
    parsed, reference = parse_program(PROGRAM_EXAMPLES[name]), entry.build()
    assert parsed.label == reference.label
    assert evaluate(parsed, list(entry.example[0])) == pytest.approx(list(entry.example[1]))
    inputs = _all_inputs(entry.vocab)
    assert [evaluate(parsed, x) for x in inputs] == [evaluate(reference, x) for x in inputs]


@pytest.mark.parametrize("name", sorted(PROGRAM_EXAMPLES))
def test_example_compiles_to_model_equal_to_interpreter(name):
    entry = LIBRARY[name]
    program = parse_program(PROGRAM_EXAMPLES[name])
    loaded = load_compiled(program, entry.vocab, entry.max_seq_len)
    inputs = _all_inputs(entry.vocab)
    got = predict_batch(loaded, inputs)
    bad = [(x, g) for x, g in zip(inputs, got) if not outputs_match(g, evaluate(program, x))]
    assert bad == []


def test_output_is_final_expression_then_program_then_last_assignment():
    last = parse_program("a = (tokens + 1).named('a')\nb = (tokens + 2).named('b')")
    assert last.label == "b"
    named = parse_program("program = (tokens + 1).named('p')\nb = (tokens + 2).named('b')")
    assert named.label == "p"
    final = parse_program("program = (tokens + 1).named('p')\n(tokens + 3).named('f')")
    assert final.label == "f"
    assert evaluate(final, [1, 2]) == [4, 5]


def test_lambdas_are_interpreted_with_python_semantics():
    text = (
        "k = 3\n"
        "Map(lambda x: (x ** 2 // k % 5 if x > 1 and not x == 4 else -abs(x))"
        " + max(x, 2) + round(x / 3, 1) + len(str(x)) * 0 + int(x in (1, 2)), tokens)"
    )
    # no `str` in the whitelist: the lambda is refused before anything runs
    with pytest.raises(RaspParseError, match="call to 'str'"):
        parse_program(text)
    program = parse_program(text.replace("len(str(x)) * 0", "0"))
    want = [
        (x**2 // 3 % 5 if x > 1 and x != 4 else -abs(x)) + max(x, 2) + round(x / 3, 1)
        for x in range(6)
    ]
    want = [w + int(x in (1, 2)) for w, x in zip(want, range(6))]
    assert evaluate(program, list(range(6))) == want


def test_selectors_combine_with_operators_and_library_calls_work():
    program = parse_program(
        "a = Select(tokens, tokens, Comparison.LT)\n"
        "b = Select(indices, indices, Comparison.LT)\n"
        "SelectorWidth(a & ~b | SelectorNot(a))"
    )
    # k is picked for q unless t_k < t_q and k < q: on [2, 1, 3] only q=2 drops k=0 and k=1
    assert evaluate(program, [2, 1, 3]) == [3, 3, 1]
    assert evaluate(parse_program("make_count(tokens, 'a')"), list("aba")) == [2, 2, 2]


def test_runaway_lambda_values_raise_instead_of_exhausting_memory():
    for body in ("2 ** (10 ** 6)", "'a' * 10 ** 9", "'%*d' % (10 ** 9, 1)", "round(10, -10 ** 9)"):
        program = parse_program(f"Map(lambda x: {body}, tokens)")
        with pytest.raises(EvaluationError, match="function failed"):
            evaluate(program, [1])


HOSTILE = {
    "import call": ("__import__('os').system('touch SENTINEL')", "__import__"),
    "class walk": ("().__class__.__bases__", "__bases__"),
    "open": ("open('SENTINEL', 'w')", "call to 'open'"),
    "exec in lambda": ("Map(lambda x: exec(\"open('SENTINEL', 'w')\"), tokens)", "'exec'"),
    "eval in lambda": ("Map(lambda x: eval('1'), tokens)", "call to 'eval'"),
    "dunder on parameter": ("Map(lambda x: x.__class__, tokens)", ".__class__"),
    "attribute on parameter": ("Map(lambda x: x.upper(), tokens)", "'.upper'"),
    "attribute on s-op": ("tokens.f", "attribute access '.f'"),
    "subscript": ("Map(lambda x: x[0], tokens)", "subscript"),
    "top-level subscript": ("tokens[0]", "subscript"),
    "import": ("import os\ntokens", "import statement"),
    "from import": ("from os import system\ntokens", "import statement"),
    "comprehension": ("Map(lambda x: [y for y in x], tokens)", "list comprehension"),
    "walrus": ("Map(lambda x: (y := x), tokens)", "walrus"),
    "f-string": ("Map(lambda x: f'{x}', tokens)", "f-string"),
    "function def": ("def f():\n    pass\ntokens", "function definition"),
    "unknown name": ("Map(lambda x: x + y, tokens)", "name 'y'"),
    "lambda default": ("Map(lambda x, f=open: f('SENTINEL', 'w'), tokens)", "defaults"),
    "keyword splat": ("Map(**{'f': 1})", "**kwargs"),
    "reserved rebinding": ("Map = 1\ntokens", "name 'Map'"),
    "builtin names": ("getattr(tokens, 'f')", "call to 'getattr'"),
    "comparison of s-ops": ("tokens == 1", "comparison"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_is_refused_naming_construct_and_nothing_runs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text, construct = HOSTILE[name]
    with pytest.raises(RaspParseError) as info:
        program = parse_program(text)
        evaluate(program, [1, 2])  # only reached if parsing wrongly succeeded
    message = str(info.value)
    assert construct in message
    assert "line " in message and "column " in message and "allowed" in message
    assert list(Path(tmp_path).iterdir()) == []


def test_refusal_reports_line_and_column_of_the_construct():
    with pytest.raises(RaspParseError) as info:
        parse_program("a = tokens + 1\nb = Map(lambda x: x.real, a)")
    assert (info.value.line, info.value.column) == (2, 19)
    assert info.value.construct == "attribute access '.real'"


def test_syntax_error_reports_line_and_column():
    with pytest.raises(RaspParseError, match="syntax error") as info:
        parse_program("a = tokens + 1\nb = Map(lambda x: x +, a)")
    assert info.value.line == 2 and info.value.column is not None and info.value.column > 1
    assert str(info.value).startswith("line 2, column ")


def test_constructor_errors_become_located_parse_errors():
    with pytest.raises(RaspParseError, match=r"line 2, column 1: Aggregate\(") as info:
        parse_program("s = Select(tokens, tokens, Comparison.EQ)\nAggregate(s, tokens, default=5)")
    assert isinstance(info.value, RaspError)
    with pytest.raises(RaspParseError, match="must be an s-op"):
        parse_program("Select(tokens, tokens, Comparison.EQ)")
    with pytest.raises(RaspParseError, match="empty"):
        parse_program("# nothing here\n")


def test_parsed_lambda_shows_its_source():
    program = parse_program("Map(lambda x: x + 1, tokens)")
    assert isinstance(program, Map) and program.inner is tokens
    assert repr(program.f) == "lambda x: x + 1"
