"""Weights of single blocks: one attention head or one MLP per RASP expression.

Conventions that make the blocks compose exactly (see ``rasp.compiler`` for the proof sketch):

* Every s-op subspace is zero at the BOS position: the embedding writes nothing there but
  ``one`` and ``tokens:BOS``, every MLP is switched off at BOS, and every head's BOS query
  attends only to BOS, whose value vector is zero.
* Attention logits are ``LOGIT * (number of true selector terms)`` for non-BOS keys and
  ``LOGIT * bos_units`` for the BOS key, so selected keys beat unselected ones by ``LOGIT``
  and BOS sits half way (aggregate: default when nothing is selected) or level with the
  selected keys (selector width: BOS takes a share 1/(n+1)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rasp.compiler.graph import Term

#: Logit gap between a selected and an unselected key (softmax error ~ exp(-LOGIT/2)).
LOGIT = 100.0


@dataclass
class Head:
    """One attention head: ``q``/``k`` are ``[d_model, d_qk]``, ``v`` ``[d_model, d_ov]``, ``o`` ``[d_ov, d_model]``."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    o: np.ndarray


@dataclass
class Mlp:
    """One MLP piece: ``w_in`` ``[d_model, h]``, ``b_in`` ``[h]``, ``w_out`` ``[h, d_model]``."""

    w_in: np.ndarray
    b_in: np.ndarray
    w_out: np.ndarray

    @staticmethod
    def concat(parts: Sequence[Mlp], d_model: int) -> Mlp:
        """Side-by-side MLPs (they read and write disjoint features, so they don't interact)."""
        if not parts:
            return Mlp(np.zeros((d_model, 0)), np.zeros(0), np.zeros((0, d_model)))
        return Mlp(
            np.concatenate([p.w_in for p in parts], axis=1),
            np.concatenate([p.b_in for p in parts]),
            np.concatenate([p.w_out for p in parts], axis=0),
        )


Space = dict[str, int]


def _dim(space: Space, label: str, value: Any = None, numerical: bool = False) -> int:
    return space[label] if numerical else space[f"{label}:{value}"]


def selector_qk(
    terms: Sequence[Term], values: dict[str, tuple | None], space: Space, bos_units: float
) -> tuple[np.ndarray, np.ndarray]:
    """``W_Q``, ``W_K`` so that q·k = LOGIT·(true terms), and LOGIT·bos_units at the BOS key."""
    d_model = len(space)
    cols: list[tuple[np.ndarray, np.ndarray]] = []
    for keys, queries, pred in terms:
        kvals, qvals = values[keys.label] or (), values[queries.label] or ()
        table = np.array([[pred(a, b) for b in qvals] for a in kvals], dtype=float).reshape(
            len(kvals), len(qvals)
        )
        on_key_side = len(kvals) <= len(qvals)  # index columns by the smaller value set
        width = len(kvals) if on_key_side else len(qvals)
        wq, wk = np.zeros((d_model, width)), np.zeros((d_model, width))
        for i, a in enumerate(kvals):
            row = space[f"{keys.label}:{a}"]
            if on_key_side:
                wk[row, i] = 1.0
            else:
                wk[row, :] = LOGIT * table[i, :]
        for j, b in enumerate(qvals):
            row = space[f"{queries.label}:{b}"]
            if on_key_side:
                wq[row, :] = LOGIT * table[:, j]
            else:
                wq[row, j] = 1.0
        cols.append((wq, wk))
    bos_q, bos_k = np.zeros((d_model, 1)), np.zeros((d_model, 1))
    bos_q[space["one"], 0] = LOGIT * bos_units
    bos_k[space["tokens:BOS"], 0] = 1.0
    cols.append((bos_q, bos_k))
    return np.concatenate([c[0] for c in cols], 1), np.concatenate([c[1] for c in cols], 1)


def aggregate_head(
    terms: Sequence[Term],
    sop_label: str,
    out_label: str,
    numerical: bool,
    values: dict[str, tuple | None],
    space: Space,
) -> Head:
    """Hard attention to the selected key (categorical) or the mean over selected keys."""
    q, k = selector_qk(terms, values, space, bos_units=len(terms) - 0.5)
    d_model = len(space)
    if numerical:
        v, o = np.zeros((d_model, 1)), np.zeros((1, d_model))
        v[space[sop_label], 0] = 1.0
        o[0, space[out_label]] = 1.0
        return Head(q, k, v, o)
    vals = values[sop_label] or ()
    v, o = np.zeros((d_model, len(vals))), np.zeros((len(vals), d_model))
    for i, val in enumerate(vals):
        v[space[f"{sop_label}:{val}"], i] = 1.0
        o[i, space[f"{out_label}:{val}"]] = 1.0
    return Head(q, k, v, o)


def selector_width_head(
    terms: Sequence[Term], scratch: str, values: dict[str, tuple | None], space: Space
) -> Head:
    """Attend to the selected keys and BOS equally; write BOS's share 1/(n+1) to ``scratch``."""
    q, k = selector_qk(terms, values, space, bos_units=len(terms))
    d_model = len(space)
    v, o = np.zeros((d_model, 1)), np.zeros((1, d_model))
    v[space["tokens:BOS"], 0] = 1.0
    o[0, space[scratch]] = 1.0
    return Head(q, k, v, o)


def _out_row(space: Space, label: str, numerical: bool, value: Any) -> np.ndarray:
    row = np.zeros(len(space))
    if value is None:
        return row
    if numerical:
        row[space[label]] = float(value)
    else:
        row[space[f"{label}:{value}"]] = 1.0
    return row


def lookup_mlp(
    inputs: Sequence[tuple[Sequence[str], Any]], out_label: str, numerical: bool, space: Space
) -> Mlp:
    """Table lookup on one-hot inputs.

    ``inputs`` lists ``(input feature labels, output value)``; a hidden unit fires
    ``ReLU(sum(features) - (len - 1))``, i.e. 1 exactly when all its features are on.
    Rows with the same single feature set per output value share a unit.
    """
    groups: dict[Any, list[Sequence[str]]] = {}
    units: list[tuple[list[Sequence[str]], Any]] = []
    for feats, out in inputs:
        if out is None or (numerical and out == 0):
            continue
        if len(feats) == 1:
            groups.setdefault(out, []).append(feats)
        else:
            units.append(([feats], out))
    units = [(fs, out) for out, fs in groups.items()] + units
    d_model = len(space)
    w_in, b_in = np.zeros((d_model, len(units))), np.zeros(len(units))
    w_out = np.zeros((len(units), d_model))
    for u, (feature_sets, out) in enumerate(units):
        for feats in feature_sets:
            for f in feats:
                w_in[space[f], u] += 1.0
        b_in[u] = -(len(feature_sets[0]) - 1.0)
        w_out[u] = _out_row(space, out_label, numerical, out)
    return Mlp(w_in, b_in, w_out)


def linear_mlp(
    fst: str, snd: str, factors: tuple[float, float], out_label: str, space: Space
) -> Mlp:
    """``a*x + b*y`` on numerical dims, through ReLU(x) - ReLU(-x)."""
    d_model = len(space)
    w_in, w_out = np.zeros((d_model, 4)), np.zeros((4, d_model))
    for i, (label, fac) in enumerate(((fst, factors[0]), (snd, factors[1]))):
        w_in[space[label], 2 * i] += 1.0
        w_in[space[label], 2 * i + 1] -= 1.0
        w_out[2 * i, space[out_label]] = fac
        w_out[2 * i + 1, space[out_label]] = -fac
    return Mlp(w_in, np.zeros(4), w_out)


def discretising_mlp(
    in_dim: str,
    grid: Sequence[float],
    outputs: Sequence[Any],
    out_label: str,
    numerical: bool,
    space: Space,
    bos_input: float = 0.0,
) -> Mlp:
    """Any function of a numerical dim that takes the values ``grid`` (sorted) to ``outputs``.

    Unit 0 is 1 off BOS; for each gap between neighbours ``x[i-1] < x[i]`` two units form a
    clamped ramp that is 0 up to a quarter of the gap above ``x[i-1]`` and 1 from a quarter
    below ``x[i]``, so inputs within gap/4 of a grid point decode exactly. The output is a
    telescoping sum of the ramps. A ``-big * tokens:BOS`` input switches every unit off at
    BOS, where the input is ``bos_input``.
    """
    d_model, n = len(space), len(grid)
    if n == 0:
        return Mlp(np.zeros((d_model, 0)), np.zeros(0), np.zeros((0, d_model)))
    h = 1 + 2 * (n - 1)
    w_in, b_in, w_out = np.zeros((d_model, h)), np.zeros(h), np.zeros((h, d_model))
    rows = [_out_row(space, out_label, numerical, y) for y in outputs]
    b_in[0], w_out[0] = 1.0, rows[0]
    span = max([abs(bos_input), *(abs(x) for x in grid)])
    for i in range(1, n):
        gap = grid[i] - grid[i - 1]
        slope, start = 2.0 / gap, grid[i - 1] + gap / 4
        for j, shift in ((2 * i - 1, 0.0), (2 * i, -1.0)):
            w_in[space[in_dim], j] = slope
            b_in[j] = -slope * start + shift
        delta = rows[i] - rows[i - 1]
        w_out[2 * i - 1], w_out[2 * i] = delta, -delta
    big = np.abs(b_in) + np.abs(w_in[space[in_dim]]) * span + 1.0
    w_in[space["tokens:BOS"]] -= big
    return Mlp(w_in, b_in, w_out)
