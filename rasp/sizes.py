"""Compiled sizes of every library program, beside Tracr's sizes for the same program.

Example:
    >>> rows = library_size_table(["reverse"])
    >>> rows[0]["layers"], rows[0]["tracr_layers"]
    (4, 4)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rasp.compiler import compile_program
from rasp.errors import CompileError
from rasp.library import LIBRARY

#: Tracr's compiled sizes (google-deepmind/tracr at HEAD, ``compile_rasp_to_model(...,
#: compiler_bos="BOS")`` on CPU, programs from tracr/compiler/lib.py with the same vocabulary
#: and max_seq_len as our ``LIBRARY``), as recorded in /work/shared/PAPERS.md section 2d.
#: layers = attention+MLP blocks, heads = most heads in one layer, d_mlp = MLP hidden width.
#: ``count_less`` is left out: Tracr has ``make_count_less_freq``, a different program.
TRACR_SIZES: dict[str, dict[str, int]] = {
    "length": {"layers": 1, "heads": 1, "d_model": 18, "d_mlp": 12},
    "reverse": {"layers": 4, "heads": 1, "d_model": 41, "d_mlp": 30},
    "hist": {"layers": 1, "heads": 1, "d_model": 18, "d_mlp": 12},
    "sort_unique": {"layers": 2, "heads": 1, "d_model": 25, "d_mlp": 12},
    "sort": {"layers": 3, "heads": 1, "d_model": 36, "d_mlp": 15},
    "sort_freq": {"layers": 5, "heads": 1, "d_model": 64, "d_mlp": 30},
    "frac_prevs": {"layers": 2, "heads": 1, "d_model": 12, "d_mlp": 1},
    "pair_balance": {"layers": 2, "heads": 2, "d_model": 16, "d_mlp": 4},
    "shuffle_dyck": {"layers": 6, "heads": 2, "d_model": 41, "d_mlp": 146},
    "shuffle_dyck2": {"layers": 8, "heads": 4, "d_model": 58, "d_mlp": 292},
    "count_a": {"layers": 1, "heads": 1, "d_model": 20, "d_mlp": 14},
    "detect_pattern": {"layers": 3, "heads": 2, "d_model": 26, "d_mlp": 6},
}

#: The keys of each row of ``library_size_table``, in display order.
COLUMNS = (
    "program",
    "vocab",
    "max_seq_len",
    "layers",
    "heads",
    "d_model",
    "d_head",
    "d_mlp",
    "n_params",
    "active_heads",
    "compile_seconds",
    "tracr_layers",
    "tracr_heads",
    "tracr_d_model",
    "tracr_d_mlp",
)


def library_size_table(names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One row per library program: our compiled sizes and Tracr's (``None`` where unknown).

    Each program is compiled with its library vocabulary and max_seq_len (bidirectional).

    Args:
        names: library programs to include (all of ``LIBRARY`` by default, in its order).

    Returns:
        Rows with the keys ``COLUMNS``: ``active_heads`` is the number of heads that
        compute something; ``vocab`` is a string such as ``"1 2 3"``.

    Raises:
        CompileError: for a name not in the library (the message lists them).

    Example:
        >>> library_size_table(["hist"])[0]["heads"]
        1
    """
    chosen = list(LIBRARY) if names is None else list(names)
    unknown = [n for n in chosen if n not in LIBRARY]
    if unknown:
        raise CompileError(
            f"unknown library program(s) {unknown!r}; library: {', '.join(sorted(LIBRARY))}"
        )
    rows = []
    for name in chosen:
        entry = LIBRARY[name]
        sizes = compile_program(entry.build(), entry.vocab, entry.max_seq_len).sizes()
        tracr = TRACR_SIZES.get(name, {})
        rows.append(
            {
                "program": name,
                "vocab": " ".join(map(str, entry.vocab)),
                "max_seq_len": entry.max_seq_len,
                **{k: sizes[k] for k in ("layers", "heads", "d_model", "d_head", "d_mlp")},
                "n_params": sizes["n_params"],
                "active_heads": len(sizes["active_heads"]),
                "compile_seconds": sizes["compile_seconds"],
                **{f"tracr_{k}": tracr.get(k) for k in ("layers", "heads", "d_model", "d_mlp")},
            }
        )
    return rows
