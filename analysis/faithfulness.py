"""Faithfulness of a circuit: how much of the task the model still does when only the circuit
runs and every other scored node is ablated (Hanna et al. 2024: judge circuits by this, not by
overlap alone).

``faithfulness = (loss_empty - loss_circuit) / (loss_empty - loss_full)``: 1 when the circuit
alone is as good as the whole model, 0 when it is no better than ablating every scored node
(``empty``). Ablation replaces a head's ``hook_z`` (or an MLP's ``hook_mlp_out``) by its mean
over the dataset at the same position (``mean``), or by zeros (``zero``). Nodes the circuit did
not score (e.g. MLPs for a CHG circuit) always run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from analysis.circuits import Circuit, parse_node
from analysis.errors import OptionError
from analysis.gating_core import check_data, evaluate_gates
from analysis.gating_data import GatingData
from analysis.hooks import attn_z, mlp_out, require_hooks
from analysis.protocol import hooked_module, model_device

Ablation = Literal["mean", "zero"]


@dataclass(frozen=True)
class Faithfulness:
    """How well a circuit alone does the task.

    Attributes:
        circuit: the circuit's display name; ``data_name`` the data it was measured on.
        members: the nodes kept running; ``ablated``: the scored nodes ablated.
        ablation: ``mean`` or ``zero``.
        loss_full, loss_circuit, loss_empty: mean loss of the whole model, of the circuit
            alone, and with every scored node ablated.
        accuracy_full, accuracy_circuit, accuracy_empty: the same for accuracy.
        faithfulness: normalised loss recovered (NaN when ablating everything changes nothing).
        accuracy_faithfulness: the same on accuracy.
    """

    circuit: str
    data_name: str
    members: tuple[str, ...]
    ablated: tuple[str, ...]
    ablation: str
    loss_full: float
    loss_circuit: float
    loss_empty: float
    accuracy_full: float
    accuracy_circuit: float
    accuracy_empty: float
    faithfulness: float
    accuracy_faithfulness: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        out = asdict(self)
        out["members"], out["ablated"] = list(self.members), list(self.ablated)
        return out


def _normalised(full: float, part: float, empty: float, *, lower_is_better: bool) -> float:
    gap = (empty - full) if lower_is_better else (full - empty)
    if not math.isfinite(gap) or abs(gap) < 1e-6:
        return float("nan")
    return ((empty - part) if lower_is_better else (part - empty)) / gap


def _hooks_of(nodes: list[str]) -> tuple[dict[int, list[int]], list[int]]:
    heads: dict[int, list[int]] = {}
    mlps: list[int] = []
    for node in nodes:
        kind, layer, head = parse_node(node)
        if kind == "head":
            heads.setdefault(layer, []).append(int(head))  # type: ignore[arg-type]
        elif kind == "mlp":
            mlps.append(layer)
        else:
            raise OptionError(f"node {node!r} cannot be ablated; only heads and MLPs can")
    return heads, mlps


@torch.no_grad()
def ablation_means(model: Any, data: GatingData, *, max_rows: int = 64) -> dict[str, Tensor]:
    """Per-position means over ``data`` of every head's ``hook_z`` (``[pos, head, d_head]``)
    and every MLP's ``hook_mlp_out`` (``[pos, d_model]``), counting only real positions."""
    inner = hooked_module(model)
    cfg = inner.cfg
    names = [attn_z(layer) for layer in range(cfg.n_layers)]
    if not cfg.attn_only:
        names += [mlp_out(layer) for layer in range(cfg.n_layers)]
    require_hooks(model, names)
    device = model_device(model)
    sums: dict[str, Tensor] = {}
    count = torch.zeros(data.tokens.shape[1])
    for length, rows in data.length_groups().items():
        for start in range(0, len(rows), max_rows):
            tokens = data.tokens[rows[start : start + max_rows], :length].to(device)
            _, cache = inner.run_with_cache(tokens, names_filter=lambda n: n in names)
            for name in names:
                part = cache[name].float().sum(0).cpu()
                total = sums.setdefault(name, torch.zeros(data.tokens.shape[1], *part.shape[1:]))
                total[:length] += part
            count[:length] += tokens.shape[0]
    shape = (-1,) + (1,) * 2
    return {n: s / count.clamp(min=1).reshape(shape[: s.ndim]) for n, s in sums.items()}


def ablation_hooks(nodes: list[str], means: dict[str, Tensor] | None) -> list[tuple[str, Callable]]:
    """Forward hooks that ablate ``nodes`` (mean when ``means`` is given, else zero)."""
    heads, mlps = _hooks_of(nodes)

    def head_hook(layer: int) -> Callable:
        idx = heads[layer]

        def hook(z: Tensor, hook: Any) -> Tensor:
            z = z.clone()
            if means is None:
                z[:, :, idx] = 0
            else:
                z[:, :, idx] = means[attn_z(layer)][: z.shape[1], idx].to(z.device, z.dtype)
            return z

        return hook

    def mlp_hook(layer: int) -> Callable:
        def hook(out: Tensor, hook: Any) -> Tensor:
            if means is None:
                return torch.zeros_like(out)
            mean = means[mlp_out(layer)][: out.shape[1]].to(out.device, out.dtype)
            return mean.expand_as(out).clone()

        return hook

    hooks = [(attn_z(layer), head_hook(layer)) for layer in heads]
    return hooks + [(mlp_out(layer), mlp_hook(layer)) for layer in mlps]


@torch.no_grad()
def ablated_loss(
    model: Any,
    data: GatingData,
    nodes: list[str],
    *,
    means: dict[str, Tensor] | None = None,
    max_rows: int = 64,
) -> tuple[float, float]:
    """Token-weighted mean loss and accuracy on ``data`` with ``nodes`` ablated."""
    hooks = ablation_hooks(nodes, means) if nodes else []
    with hooked_module(model).hooks(fwd_hooks=hooks):
        loss, acc = evaluate_gates(model, data, None, max_rows=max_rows)
    return float(loss[0]), float(acc[0])


def circuit_faithfulness(
    model: Any,
    data: GatingData,
    circuit: Circuit,
    *,
    ablation: Ablation = "mean",
    means: dict[str, Tensor] | None = None,
    max_rows: int = 64,
) -> Faithfulness:
    """Run only ``circuit``'s members (other scored nodes ablated) and compare with the whole
    model and with every scored node ablated.

    Args:
        model: the circuit's model (or another of the same shape: cross-faithfulness).
        data: the task data; a circuit found on other data gives cross-task faithfulness.
        circuit: the circuit; its members run, its other scored nodes are ablated.
        ablation: ``mean`` (per-position means over ``data``) or ``zero``.
        means: precomputed ``ablation_means(model, data)`` to share between circuits.
        max_rows: rows per forward pass.

    Returns:
        A ``Faithfulness``.

    Raises:
        OptionError: bad data for the model, a circuit of another shape, an unknown ablation.

    Example:
        >>> circuit_faithfulness(lm, data, circuit).faithfulness   # doctest: +SKIP
        0.97
    """
    if ablation not in ("mean", "zero"):
        raise OptionError(f"unknown ablation {ablation!r}; valid: mean, zero")
    cfg = hooked_module(model).cfg
    if (circuit.n_layers, circuit.n_heads) != (cfg.n_layers, cfg.n_heads):
        raise OptionError(
            f"circuit of a {circuit.n_layers}x{circuit.n_heads} model cannot run on a "
            f"{cfg.n_layers}x{cfg.n_heads} model"
        )
    check_data(model, data)
    if ablation == "mean" and means is None:
        means = ablation_means(model, data, max_rows=max_rows)
    used = means if ablation == "mean" else None
    scored = [n for n in circuit.nodes if parse_node(n)[0] in ("head", "mlp")]
    rest = [n for n in scored if n not in circuit.members]
    full = ablated_loss(model, data, [], max_rows=max_rows)
    part = ablated_loss(model, data, rest, means=used, max_rows=max_rows)
    empty = ablated_loss(model, data, scored, means=used, max_rows=max_rows)
    numerical = data.is_numerical
    return Faithfulness(
        circuit=f"{circuit.model_name} | {circuit.data_name} | {circuit.method}",
        data_name=data.name,
        members=tuple(circuit.member_nodes()),
        ablated=tuple(rest),
        ablation=ablation,
        loss_full=full[0],
        loss_circuit=part[0],
        loss_empty=empty[0],
        accuracy_full=full[1],
        accuracy_circuit=part[1],
        accuracy_empty=empty[1],
        faithfulness=_normalised(full[0], part[0], empty[0], lower_is_better=True),
        accuracy_faithfulness=float("nan")
        if numerical
        else _normalised(full[1], part[1], empty[1], lower_is_better=False),
    )
