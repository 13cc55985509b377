"""Diffs of two circuits: what one has that the other lacks, and how the scores moved.

Two circuits of the same architecture are aligned by node id (``L3H2`` is ``L3H2``); two of
different architectures by an ``alignment`` ``{node of b: node of a}`` (from
``analysis.head_matching``), with a confidence per pair. Only nodes scored in both circuits
(after alignment) are compared; the others are listed as unaligned. The scores of a diff are
the Jaccard overlap of the member sets and of the top-k nodes, and the Spearman correlation of
the node scores; faithfulness (``analysis.faithfulness``) is reported beside them, because
overlap can be high while a circuit explains little (Hanna et al. 2024).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
from scipy.stats import spearmanr

from analysis.circuits import Circuit, parse_node, split_edge
from analysis.errors import OptionError

#: Change statuses of a node or edge in a diff (``a`` is the reference, ``b`` the new one).
STATUSES = ("added", "removed", "strengthened", "weakened", "shared", "absent")


@dataclass(frozen=True)
class CircuitDiff:
    """How circuit ``b`` differs from circuit ``a``.

    Attributes:
        a_name, b_name: display names (``model | data | method``).
        frame: one row per aligned node: ``node`` (a's id), ``node_b``, ``kind``, ``layer``,
            ``head``, ``score_a``, ``score_b``, ``delta``, ``in_a``, ``in_b``, ``status``,
            ``confidence`` (of the alignment; 1.0 for same-architecture diffs).
        edge_frame: the same per edge (empty unless both circuits have edges).
        jaccard: |members a & b| / |members a | b| over aligned nodes (NaN when neither
            circuit has an aligned member: there is nothing to compare).
        top_k, top_k_jaccard: the k compared and the Jaccard of the two top-k sets.
        spearman: rank correlation of node scores over aligned nodes (NaN if constant).
        edge_jaccard, edge_spearman: the same over edges (NaN without edges).
        unaligned_a, unaligned_b: nodes scored in one circuit with no partner in the other.
        faithfulness: ``{"a" | "b": {...}}`` filled by ``with_faithfulness``.
        tolerance: score change below which a shared node counts as unchanged.
    """

    a_name: str
    b_name: str
    frame: pd.DataFrame
    edge_frame: pd.DataFrame
    jaccard: float
    top_k: int
    top_k_jaccard: float
    spearman: float
    edge_jaccard: float
    edge_spearman: float
    unaligned_a: tuple[str, ...]
    unaligned_b: tuple[str, ...]
    tolerance: float
    faithfulness: dict[str, dict[str, Any]] = field(default_factory=dict)

    def nodes_with(self, status: str) -> list[str]:
        """Node ids (a's ids; b's for nodes only b has) with ``status``.

        Raises:
            OptionError: for a status not in ``STATUSES``.
        """
        if status not in STATUSES:
            raise OptionError(f"unknown status {status!r}; valid: {', '.join(STATUSES)}")
        return self.frame.loc[self.frame["status"] == status, "node"].tolist()

    def summary(self) -> dict[str, Any]:
        """The headline numbers: overlaps, correlation, counts per status, faithfulness."""
        counts = self.frame["status"].value_counts().to_dict()
        edge_counts = (
            self.edge_frame["status"].value_counts().to_dict() if len(self.edge_frame) else {}
        )
        return {
            "a": self.a_name,
            "b": self.b_name,
            "jaccard": self.jaccard,
            "top_k": self.top_k,
            "top_k_jaccard": self.top_k_jaccard,
            "spearman": self.spearman,
            "edge_jaccard": self.edge_jaccard,
            "edge_spearman": self.edge_spearman,
            "nodes": {s: int(counts.get(s, 0)) for s in STATUSES},
            "edges": {s: int(edge_counts.get(s, 0)) for s in STATUSES},
            "unaligned_a": list(self.unaligned_a),
            "unaligned_b": list(self.unaligned_b),
            "faithfulness": self.faithfulness,
        }

    def with_faithfulness(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> CircuitDiff:
        """A copy carrying the faithfulness of each circuit (any JSON-safe dicts)."""
        return replace(self, faithfulness={"a": dict(a), "b": dict(b)})

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: the summary plus the node and edge rows."""
        return {
            **self.summary(),
            "tolerance": self.tolerance,
            "node_rows": self.frame.to_dict(orient="records"),
            "edge_rows": self.edge_frame.to_dict(orient="records"),
        }


def circuit_name(circuit: Circuit) -> str:
    """``model | data | method`` for titles."""
    return f"{circuit.model_name} | {circuit.data_name} | {circuit.method}"


def _status(in_a: bool, in_b: bool, sa: float, sb: float, tol: float) -> str:
    if in_a and not in_b:
        return "removed"
    if in_b and not in_a:
        return "added"
    if not (in_a or in_b):
        return "absent"
    if abs(sb) - abs(sa) > tol:
        return "strengthened"
    if abs(sa) - abs(sb) > tol:
        return "weakened"
    return "shared"


def _jaccard(x: set[str], y: set[str]) -> float:
    union = x | y
    return len(x & y) / len(union) if union else float("nan")


def _spearman(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return float("nan")
    return float(spearmanr(xs, ys).statistic)


def _scale(values: list[float]) -> float:
    return max((abs(v) for v in values), default=0.0) or 1.0


def diff_circuits(
    a: Circuit,
    b: Circuit,
    *,
    alignment: Mapping[str, str] | None = None,
    confidence: Mapping[str, float] | None = None,
    top_k: int | None = None,
    tolerance: float = 0.1,
) -> CircuitDiff:
    """Align ``b`` to ``a`` and say what was added, removed, strengthened or weakened.

    Scores of the two circuits may live on different scales (CHG gates in [0, 1], patching
    effects in nats), so strengthened/weakened compare scores divided by each circuit's
    largest magnitude: a shared node changes when its relative score moves by more than
    ``tolerance``.

    Args:
        a: the reference circuit (e.g. the early checkpoint, dataset A, the compiled model).
        b: the other circuit.
        alignment: ``{node of b: node of a}`` for circuits of different architectures; ``None``
            aligns by id, which needs both models to have the same shape.
        confidence: ``{node of b: confidence in [0, 1]}`` of each aligned pair.
        top_k: k of the top-k Jaccard (default: the larger member count, at least 1).
        tolerance: relative score change that counts as strengthened/weakened.

    Returns:
        A ``CircuitDiff``.

    Raises:
        OptionError: same-id alignment of circuits of different shapes; an alignment naming
            nodes neither circuit scored, or mapping two nodes of b to one node of a.

    Example:
        >>> d = diff_circuits(early, late)   # doctest: +SKIP
        >>> d.nodes_with("added")
        ['L1H0']
    """
    if alignment is None:
        if (a.n_layers, a.n_heads) != (b.n_layers, b.n_heads):
            raise OptionError(
                f"circuits of a {a.n_layers}x{a.n_heads} and a {b.n_layers}x{b.n_heads} model "
                "cannot be aligned by node id; pass an alignment (analysis.head_matching)"
            )
        alignment = {n: n for n in b.nodes if n in set(a.nodes)}
    else:
        if bad := sorted(set(alignment) - set(b.nodes)):
            raise OptionError(f"alignment maps nodes {bad} that circuit b did not score")
        if bad := sorted(set(alignment.values()) - set(a.nodes)):
            raise OptionError(f"alignment maps onto nodes {bad} that circuit a did not score")
        if len(set(alignment.values())) != len(alignment):
            raise OptionError("alignment maps two nodes of b onto the same node of a")
    confidence = confidence or {}
    sa_map, sb_map = a.scores(), b.scores()
    scale_a, scale_b = _scale(list(sa_map.values())), _scale(list(sb_map.values()))
    rows = []
    for nb, na in alignment.items():
        sa, sb = sa_map[na], sb_map[nb]
        in_a, in_b = na in a.members, nb in b.members
        kind, layer, head = parse_node(na)
        rows.append({
            "node": na, "node_b": nb, "kind": kind, "layer": layer, "head": head,
            "score_a": sa, "score_b": sb, "delta": sb - sa,
            "in_a": in_a, "in_b": in_b,
            "status": _status(in_a, in_b, sa / scale_a, sb / scale_b, tolerance),
            "confidence": float(confidence.get(nb, 1.0)),
        })  # fmt: skip
    frame = pd.DataFrame(rows)
    if len(frame):
        frame = frame.sort_values(["layer", "kind", "head"], na_position="last", kind="stable")
        frame = frame.reset_index(drop=True)
    members_a = {n for n in frame["node"] if n in a.members} if len(frame) else set()
    members_b = {alignment[n] for n in b.members if n in alignment}
    k = top_k or max(len(a.members), len(b.members), 1)
    aligned_a = [alignment[n] for n in alignment]
    top_a = set(_top(aligned_a, sa_map, k))
    top_b = {alignment[n] for n in _top(list(alignment), sb_map, k)}
    edge_frame, edge_j, edge_rho = _edge_diff(a, b, alignment, tolerance)
    return CircuitDiff(
        a_name=circuit_name(a),
        b_name=circuit_name(b),
        frame=frame,
        edge_frame=edge_frame,
        jaccard=_jaccard(members_a, members_b),
        top_k=k,
        top_k_jaccard=_jaccard(top_a, top_b),
        spearman=_spearman(frame["score_a"].tolist(), frame["score_b"].tolist())
        if len(frame)
        else float("nan"),
        edge_jaccard=edge_j,
        edge_spearman=edge_rho,
        unaligned_a=tuple(n for n in a.nodes if n not in set(alignment.values())),
        unaligned_b=tuple(n for n in b.nodes if n not in alignment),
        tolerance=tolerance,
    )


def _top(nodes: list[str], scores: Mapping[str, float], k: int) -> list[str]:
    return sorted(nodes, key=lambda n: -abs(scores[n]))[:k]


def _map_edge(edge: str, alignment: Mapping[str, str]) -> str | None:
    src, dst = split_edge(edge)
    fixed = {"embed", "logits"}
    src_a = src if src in fixed else alignment.get(src)
    dst_a = dst if dst in fixed else alignment.get(dst)
    if src_a is None or dst_a is None:
        return None
    return f"{src_a}->{dst_a}"


def _edge_diff(
    a: Circuit, b: Circuit, alignment: Mapping[str, str], tolerance: float
) -> tuple[pd.DataFrame, float, float]:
    columns = ["edge", "edge_b", "src", "dst", "score_a", "score_b", "delta", "in_a", "in_b",
               "status"]  # fmt: skip
    if a.edge_scores is None or b.edge_scores is None:
        return pd.DataFrame(columns=columns), math.nan, math.nan
    ea, eb = a.edge_score_map(), b.edge_score_map()
    scale_a, scale_b = _scale(list(ea.values())), _scale(list(eb.values()))
    rows = []
    for edge_b, sb in eb.items():
        edge_a = _map_edge(edge_b, alignment)
        if edge_a is None or edge_a not in ea:
            continue
        sa = ea[edge_a]
        in_a, in_b = edge_a in a.edge_members, edge_b in b.edge_members
        src, dst = split_edge(edge_a)
        rows.append({
            "edge": edge_a, "edge_b": edge_b, "src": src, "dst": dst,
            "score_a": sa, "score_b": sb, "delta": sb - sa, "in_a": in_a, "in_b": in_b,
            "status": _status(in_a, in_b, sa / scale_a, sb / scale_b, tolerance),
        })  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns)
    members_a = set(frame.loc[frame["in_a"], "edge"]) if len(frame) else set()
    members_b = set(frame.loc[frame["in_b"], "edge"]) if len(frame) else set()
    rho = (
        _spearman(frame["score_a"].tolist(), frame["score_b"].tolist()) if len(frame) else math.nan
    )
    return frame, _jaccard(members_a, members_b), rho
