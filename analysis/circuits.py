"""Circuits: scored graphs over one model's components, from any discovery method.

A circuit names the model's nodes it scored (attention heads ``L3H2``, MLPs ``L3.mlp``), a
score per node (bigger magnitude = more important; the sign is the method's own), the nodes
it keeps (``members``), and where computed the edges between nodes (``L1H0->L3H2``; sources
may be ``embed``, destinations ``logits``) with their scores. Constructors here build one
from a CHG fit, from a compiled model's ``head_roles`` (the exact circuit of a RASP model) or
from any per-node scores; ``analysis.edge_attribution`` builds them from attribution and
activation patching. Diffs and faithfulness live in ``analysis.circuit_diff``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from analysis.errors import OptionError
from analysis.head_gating import HeadGatingResult
from analysis.hooks import head_label

EMBED = "embed"
LOGITS = "logits"
_HEAD = re.compile(r"^L(\d+)H(\d+)$")
_MLP = re.compile(r"^L(\d+)\.mlp$")


def mlp_label(layer: int) -> str:
    """The node id of layer ``layer``'s MLP, e.g. ``L3.mlp``."""
    return f"L{layer}.mlp"


def edge_label(src: str, dst: str) -> str:
    """The id of the edge from node ``src`` to node ``dst``, e.g. ``L1H0->L3H2``."""
    return f"{src}->{dst}"


def split_edge(edge: str) -> tuple[str, str]:
    """``(src, dst)`` of an edge id.

    Raises:
        OptionError: when ``edge`` is not ``src->dst``.
    """
    parts = edge.split("->")
    if len(parts) != 2 or not all(parts):
        raise OptionError(f"bad edge id {edge!r}; expected 'SRC->DST', e.g. 'L1H0->L3H2'")
    return parts[0], parts[1]


def parse_node(node: str) -> tuple[str, int, int | None]:
    """``(kind, layer, head)`` of a node id: ``("head", 3, 2)``, ``("mlp", 3, None)``;
    ``embed`` is layer -1 and ``logits`` layer 10**6, so sorting by layer follows the graph.

    Raises:
        OptionError: for an id that is none of those.
    """
    if node == EMBED:
        return "embed", -1, None
    if node == LOGITS:
        return "logits", 10**6, None
    if m := _HEAD.match(node):
        return "head", int(m[1]), int(m[2])
    if m := _MLP.match(node):
        return "mlp", int(m[1]), None
    raise OptionError(
        f"bad node id {node!r}; valid: 'L<layer>H<head>', 'L<layer>.mlp', 'embed', 'logits'"
    )


def _node_order(node: str) -> tuple[int, int, int]:
    kind, layer, head = parse_node(node)
    return layer, kind == "mlp", head or 0


def graph_nodes(n_layers: int, n_heads: int, *, mlps: bool = True) -> tuple[str, ...]:
    """Every head (and MLP) of a model in forward order: ``L0H0 .. L0H{n-1} L0.mlp L1H0 ..``."""
    out: list[str] = []
    for layer in range(n_layers):
        out += [head_label(layer, h) for h in range(n_heads)]
        if mlps:
            out.append(mlp_label(layer))
    return tuple(out)


def model_nodes(model: Any, *, mlps: bool = True) -> tuple[str, ...]:
    """``graph_nodes`` of a hooked model (no MLP nodes for an attention-only model)."""
    cfg = model.cfg
    return graph_nodes(cfg.n_layers, cfg.n_heads, mlps=mlps and not cfg.attn_only)


@dataclass(frozen=True)
class Circuit:
    """A scored subgraph of one model.

    Attributes:
        model_name: the model it belongs to.
        n_layers, n_heads: the model's shape (for layer x head maps).
        nodes: the nodes the method scored, in forward order.
        node_scores: ``[node]`` one score per node; ranked by magnitude.
        members: the nodes in the circuit (a subset of ``nodes``).
        method: what produced it (``chg``, ``compiled``, ``eap``, ``activation_patching``, ...).
        data_name: the data (or prompt pair) it was found on.
        score_name: what a node score means (``facilitation``, ``attribution``, ``role``).
        edges: edge ids ``src->dst`` the method scored (empty for node-level methods).
        edge_scores: ``[edge]`` one score per edge, or ``None``.
        edge_members: the edges in the circuit.
        roles: ``{node: what it computes}`` where known (compiled models).

    Example:
        >>> c = circuit_from_node_scores("m", 1, 2, {"L0H0": 0.9, "L0H1": 0.1}, top_k=1)
        >>> sorted(c.members)
        ['L0H0']
    """

    model_name: str
    n_layers: int
    n_heads: int
    nodes: tuple[str, ...]
    node_scores: Float[Tensor, " node"]
    members: frozenset[str]
    method: str
    data_name: str
    score_name: str
    edges: tuple[str, ...] = ()
    edge_scores: Float[Tensor, " edge"] | None = None
    edge_members: frozenset[str] = frozenset()
    roles: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.node_scores.shape != (len(self.nodes),):
            raise OptionError(
                f"{len(self.nodes)} nodes but node_scores of shape {tuple(self.node_scores.shape)}"
            )
        for node in self.nodes:
            parse_node(node)
        if missing := sorted(set(self.members) - set(self.nodes)):
            raise OptionError(f"members {missing} are not among the circuit's nodes")
        n_edges = 0 if self.edge_scores is None else self.edge_scores.shape[0]
        if n_edges != len(self.edges):
            raise OptionError(f"{len(self.edges)} edges but {n_edges} edge scores")
        if missing := sorted(set(self.edge_members) - set(self.edges)):
            raise OptionError(f"edge members {missing[:5]} are not among the circuit's edges")

    @property
    def heads(self) -> tuple[str, ...]:
        """The head nodes scored."""
        return tuple(n for n in self.nodes if parse_node(n)[0] == "head")

    def scores(self) -> dict[str, float]:
        """``{node: score}``."""
        return dict(zip(self.nodes, self.node_scores.tolist(), strict=True))

    def edge_score_map(self) -> dict[str, float]:
        """``{edge: score}`` (empty for node-level circuits)."""
        if self.edge_scores is None:
            return {}
        return dict(zip(self.edges, self.edge_scores.tolist(), strict=True))

    def top_nodes(self, k: int) -> list[str]:
        """The ``k`` nodes of largest score magnitude (ties: forward order)."""
        if k < 1:
            raise OptionError(f"k must be at least 1, got {k}")
        order = torch.argsort(self.node_scores.abs(), descending=True, stable=True)
        return [self.nodes[i] for i in order[:k].tolist()]

    def top_edges(self, k: int) -> list[str]:
        """The ``k`` edges of largest score magnitude."""
        if self.edge_scores is None:
            return []
        order = torch.argsort(self.edge_scores.abs(), descending=True, stable=True)
        return [self.edges[i] for i in order[:k].tolist()]

    def head_map(self) -> Float[Tensor, "layer head"]:
        """``[layer, head]`` head scores, NaN for heads the method did not score."""
        out = torch.full((self.n_layers, self.n_heads), float("nan"))
        for node, score in self.scores().items():
            kind, layer, head = parse_node(node)
            if kind == "head":
                out[layer, head] = score
        return out

    def member_nodes(self) -> list[str]:
        """The members in forward order."""
        return [n for n in self.nodes if n in self.members]

    def with_members(self, members: Iterable[str]) -> Circuit:
        """The same scores with another member set."""
        return replace(self, members=frozenset(members))

    def to_frame(self) -> pd.DataFrame:
        """One row per node: node, kind, layer, head, score, member, role."""
        rows = []
        for node, score in self.scores().items():
            kind, layer, head = parse_node(node)
            rows.append({"node": node, "kind": kind, "layer": layer, "head": head,
                         "score": score, "member": node in self.members,
                         "role": self.roles.get(node, "")})  # fmt: skip
        return pd.DataFrame(rows)

    def edge_frame(self) -> pd.DataFrame:
        """One row per edge: edge, src, dst, score, member."""
        rows = [
            {"edge": e, "src": split_edge(e)[0], "dst": split_edge(e)[1], "score": s,
             "member": e in self.edge_members}
            for e, s in self.edge_score_map().items()
        ]  # fmt: skip
        return pd.DataFrame(rows, columns=["edge", "src", "dst", "score", "member"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "model_name": self.model_name,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "method": self.method,
            "data_name": self.data_name,
            "score_name": self.score_name,
            "nodes": list(self.nodes),
            "node_scores": self.node_scores.tolist(),
            "members": self.member_nodes(),
            "edges": list(self.edges),
            "edge_scores": None if self.edge_scores is None else self.edge_scores.tolist(),
            "edge_members": sorted(self.edge_members),
            "roles": dict(self.roles),
        }


def select_members(
    nodes: Iterable[str],
    scores: Tensor,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
) -> frozenset[str]:
    """The nodes (or edges) kept: the ``top_k`` of largest magnitude, or those with
    ``|score| >= threshold`` (both given: both must hold).

    Raises:
        OptionError: when neither is given, or for ``top_k < 1``.
    """
    names = list(nodes)
    if top_k is None and threshold is None:
        raise OptionError("give top_k or threshold to choose the circuit's members")
    keep = torch.ones(len(names), dtype=torch.bool)
    if threshold is not None:
        keep &= scores.abs() >= threshold
    if top_k is not None:
        if top_k < 1:
            raise OptionError(f"top_k must be at least 1, got {top_k}")
        order = torch.argsort(scores.abs(), descending=True, stable=True)[:top_k]
        top = torch.zeros(len(names), dtype=torch.bool)
        top[order] = True
        keep &= top
    return frozenset(n for n, k in zip(names, keep.tolist(), strict=True) if k)


def circuit_from_node_scores(
    model_name: str,
    n_layers: int,
    n_heads: int,
    scores: Mapping[str, float],
    *,
    method: str = "scores",
    data_name: str = "data",
    score_name: str = "score",
    top_k: int | None = None,
    threshold: float | None = None,
    members: Iterable[str] | None = None,
) -> Circuit:
    """A node-level circuit from ``{node: score}``; members given, or chosen by
    ``top_k`` / ``threshold`` (see ``select_members``).

    Example:
        >>> circuit_from_node_scores("m", 2, 1, {"L0H0": 1.0, "L1H0": 0.0}, threshold=0.5).member_nodes()
        ['L0H0']
    """
    order = sorted(scores, key=_node_order)
    values = torch.tensor([float(scores[n]) for n in order])
    chosen = (
        frozenset(members)
        if members is not None
        else select_members(order, values, top_k=top_k, threshold=threshold)
    )
    return Circuit(model_name, n_layers, n_heads, tuple(order), values, chosen, method,
                   data_name, score_name)  # fmt: skip


def circuit_from_gating(
    result: HeadGatingResult, *, score: str = "facilitation", members: str = "facilitating"
) -> Circuit:
    """The circuit a CHG fit found: every head scored by ``score`` (mean over valid seeds),
    the heads of class ``members`` kept.

    Raises:
        OptionError: for an unknown score or class.

    Example:
        >>> circuit_from_gating(fit).member_nodes()   # doctest: +SKIP
        ['L1H0', 'L2H0']
    """
    if score not in result.scores:
        raise OptionError(f"unknown CHG score {score!r}; valid: {', '.join(result.scores)}")
    grid = result.scores[score]
    n_layers, n_heads = grid.shape
    values = {
        head_label(layer, h): float(grid[layer, h])
        for layer in range(n_layers)
        for h in range(n_heads)
    }
    return circuit_from_node_scores(
        result.model_name, n_layers, n_heads, values, method="chg", data_name=result.data_name,
        score_name=score, members=result.heads_in(members),
    )  # fmt: skip


def circuit_from_roles(
    model_name: str,
    n_layers: int,
    n_heads: int,
    roles: Mapping[str, str],
    *,
    mlps: bool = True,
    data_name: str = "construction",
) -> Circuit:
    """The exact circuit of a compiled model: nodes with a role score 1 and are members, the
    others score 0. Edges follow the residual-stream reads of each role where the role text
    does not say them, so none are given here.

    Raises:
        OptionError: for a role naming a node outside the model.

    Example:
        >>> circuit_from_roles("rasp:sort", 3, 1, {"L1H0": "rank", "L2H0": "sort"}).member_nodes()
        ['L1H0', 'L2H0']
    """
    nodes = graph_nodes(n_layers, n_heads, mlps=mlps)
    if unknown := sorted(set(roles) - set(nodes)):
        raise OptionError(f"roles name nodes {unknown} that a {n_layers}x{n_heads} model lacks")
    values = {n: 1.0 if n in roles else 0.0 for n in nodes}
    circuit = circuit_from_node_scores(
        model_name, n_layers, n_heads, values, method="compiled", data_name=data_name,
        score_name="role", members=list(roles),
    )  # fmt: skip
    return replace(circuit, roles=dict(roles))


def model_circuit_from_roles(model: Any) -> Circuit:
    """``circuit_from_roles`` of a loaded compiled model (its ``head_roles``).

    Raises:
        OptionError: when the model has no roles known by construction.
    """
    roles = getattr(model, "head_roles", None)
    if not roles:
        raise OptionError(
            f"model {getattr(model, 'name', 'model')!r} has no roles known by construction; "
            "only compiled (rasp:, program:) models carry head_roles"
        )
    cfg = model.cfg
    return circuit_from_roles(
        str(getattr(model, "name", cfg.model_name)), cfg.n_layers, cfg.n_heads, roles,
        mlps=not cfg.attn_only,
    )  # fmt: skip
