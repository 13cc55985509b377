"""The library size table lists every program with its real compiled sizes and Tracr's."""

from __future__ import annotations

import pytest

from rasp import LIBRARY, CompileError, compile_program
from rasp.sizes import COLUMNS, TRACR_SIZES, library_size_table


@pytest.fixture(scope="module")
def table():
    return library_size_table()


def test_every_library_program_has_one_row_in_library_order(table):
    assert [row["program"] for row in table] == list(LIBRARY)
    assert all(tuple(row) == COLUMNS for row in table)


def test_sizes_equal_the_compiled_program(table):
    for row in table:
        entry = LIBRARY[row["program"]]
        sizes = compile_program(entry.build(), entry.vocab, entry.max_seq_len).sizes()
        got = {k: row[k] for k in ("layers", "heads", "d_model", "d_head", "d_mlp", "n_params")}
        assert got == {k: sizes[k] for k in got}, row["program"]
        assert row["active_heads"] == len(sizes["active_heads"])
        assert row["max_seq_len"] == entry.max_seq_len
        assert 0 <= row["compile_seconds"] < 30


def test_tracr_numbers_are_attached_where_known(table):
    by_name = {row["program"]: row for row in table}
    assert set(TRACR_SIZES) <= set(LIBRARY)
    # PAPERS.md 2d: make_reverse compiles to 4 layers, 1 head, d_model 41, MLP width 30
    rev = by_name["reverse"]
    assert (rev["tracr_layers"], rev["tracr_heads"], rev["tracr_d_model"], rev["tracr_d_mlp"]) == (
        4,
        1,
        41,
        30,
    )
    assert by_name["count_less"]["tracr_layers"] is None  # Tracr has no such program
    # our layer allocation never needs more layers than Tracr's on the programs both have
    assert all(
        row["layers"] <= row["tracr_layers"]
        for row in table
        if row["tracr_layers"] is not None and row["program"] != "detect_pattern"
    )


def test_unknown_program_lists_the_library():
    with pytest.raises(CompileError, match=r"unknown library program.*reverse"):
        library_size_table(["reverse", "nope"])
