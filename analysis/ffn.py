"""FFN sub-updates (Geva et al. 2022): the MLP output as a sum of weighted value vectors.

At one layer and position, ``MLP(x) = sum_i m_i v_i (+ b_out)`` with ``m_i`` the MLP's hidden
activation after the non-linearity (and, in gated MLPs, after the gate: TL's ``mlp.hook_post``)
and ``v_i`` row ``i`` of ``W_out``. The sub-updates with the largest ``|m_i| * ||v_i||`` are
projected to the vocabulary through the final norm and the unembedding, as Geva et al. do, to
read which tokens each one promotes and suppresses.

Works on HookedTransformer and on TransformerBridge (whose ``blocks[l].mlp.W_out`` is the HF
``down_proj``/``c_proj`` weight in TL orientation ``[d_mlp, d_model]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from analysis.errors import OptionError
from analysis.hooks import check_layers, mlp_out, mlp_post, require_hooks
from analysis.protocol import (
    Inputs,
    hooked_module,
    input_labels,
    model_name,
    output_labels,
    tokens_of,
    unembed,
)


@dataclass(frozen=True)
class FfnUpdatesResult:
    """The largest FFN sub-updates at one layer and position.

    Attributes:
        model_name: the model.
        layer, position: where (``position`` made non-negative).
        tokens: input position labels.
        prediction: the model's top-1 output at ``position``.
        indices: ``[k]`` value-vector (neuron) indices, largest ``|m_i| * ||v_i||`` first.
        activations: ``[k]`` ``m_i``.
        norms: ``[k]`` ``||v_i||``.
        scores: ``[k]`` ``|m_i| * ||v_i||``, the norm of the sub-update ``m_i v_i``.
        vectors: ``[k, d_model]`` the value vectors ``v_i`` (rows of ``W_out``).
        promoted_tokens, suppressed_tokens: ``[k][k_tokens]`` tokens with the highest / lowest
            logits of ``unembed(ln_final(m_i v_i))`` (the sign of ``m_i`` decides which end of
            ``v_i``'s projection is promoted).
        promoted_logits, suppressed_logits: ``[k, k_tokens]`` those logits.
        effect_on_prediction: ``[k]`` the sub-update's direct logit effect on ``prediction``,
            ``m_i * (v_i . W_U[:, prediction])`` (Geva et al.'s ``m_i (e_w . v_i)``).
        share_of_update: ``[k]`` ``scores`` over the sum of all sub-update norms.
        b_out: ``[d_model]`` the MLP output bias (zeros where there is none).
        mlp_out: ``[d_model]`` the MLP output at the position (``hook_mlp_out``).
    """

    model_name: str
    layer: int
    position: int
    tokens: list[str]
    prediction: str
    indices: Int[Tensor, " k"]
    activations: Float[Tensor, " k"]
    norms: Float[Tensor, " k"]
    scores: Float[Tensor, " k"]
    vectors: Float[Tensor, "k d_model"] = field(repr=False)
    promoted_tokens: list[list[str]] = field(repr=False)
    suppressed_tokens: list[list[str]] = field(repr=False)
    promoted_logits: Float[Tensor, "k k_tokens"] = field(repr=False)
    suppressed_logits: Float[Tensor, "k k_tokens"] = field(repr=False)
    effect_on_prediction: Float[Tensor, " k"] = field(repr=False)
    share_of_update: Float[Tensor, " k"] = field(repr=False)
    b_out: Float[Tensor, " d_model"] = field(repr=False)
    mlp_out: Float[Tensor, " d_model"] = field(repr=False)

    def to_frame(self) -> pd.DataFrame:
        """One row per sub-update: neuron, activation, norm, score, effect and its top tokens."""
        return pd.DataFrame(
            {
                "layer": self.layer,
                "position": self.position,
                "neuron": self.indices.tolist(),
                "activation": self.activations.tolist(),
                "norm": self.norms.tolist(),
                "score": self.scores.tolist(),
                "share_of_update": self.share_of_update.tolist(),
                "effect_on_prediction": self.effect_on_prediction.tolist(),
                "promotes": [" ".join(map(repr, t)) for t in self.promoted_tokens],
                "suppresses": [" ".join(map(repr, t)) for t in self.suppressed_tokens],
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (value vectors left out: ``d_model`` floats each)."""
        return {"model_name": self.model_name, "layer": self.layer, "position": self.position,
                "tokens": self.tokens, "prediction": self.prediction,
                "indices": self.indices.tolist(), "activations": self.activations.tolist(),
                "norms": self.norms.tolist(), "scores": self.scores.tolist(),
                "promoted_tokens": self.promoted_tokens, "suppressed_tokens": self.suppressed_tokens,
                "promoted_logits": self.promoted_logits.tolist(),
                "suppressed_logits": self.suppressed_logits.tolist(),
                "effect_on_prediction": self.effect_on_prediction.tolist(),
                "share_of_update": self.share_of_update.tolist()}  # fmt: skip


def mlp_out_bias(model: Any, layer: int, d_model: int) -> Tensor:
    """The MLP's output bias at ``layer`` (zeros for bias-free MLPs such as Llama's)."""
    inner = hooked_module(model)
    b_out = getattr(inner.blocks[layer].mlp, "b_out", None)
    if b_out is None:
        return torch.zeros(d_model)
    return b_out.detach().float().cpu()


@torch.inference_mode()
def run_ffn_updates(
    model: Any,
    inputs: Inputs,
    *,
    layer: int,
    position: int = -1,
    k_vectors: int = 10,
    k_tokens: int = 8,
) -> FfnUpdatesResult:
    """The ``k_vectors`` largest FFN sub-updates at one layer and position, read in vocabulary space.

    Args:
        model: a hooked model with an MLP at ``layer``.
        inputs: a prompt, a task sequence or a ``[1, pos]`` token tensor.
        layer: the block whose MLP to decompose.
        position: the input position (negative counts from the end).
        k_vectors: how many sub-updates to keep (capped at ``d_mlp``).
        k_tokens: how many promoted and suppressed tokens to list for each.

    Returns:
        An ``FfnUpdatesResult``; with ``k_vectors = d_mlp``,
        ``(activations[:, None] * vectors).sum(0) + b_out`` equals ``mlp_out``.

    Raises:
        OptionError: a layer or position out of range, or ``k_vectors``/``k_tokens`` < 1.
        HookNotFoundError: a model without MLPs (attention-only).

    Example:
        >>> r = run_ffn_updates(load_model("smollm2-135m"), "The capital of France is", layer=20)  # doctest: +SKIP
        >>> r.promoted_tokens[0][:3]                                                             # doctest: +SKIP
    """
    check_layers(model, [layer])
    if k_vectors < 1 or k_tokens < 1:
        raise OptionError(f"k_vectors and k_tokens must be at least 1, got {k_vectors}, {k_tokens}")
    names = [mlp_post(layer), mlp_out(layer)]
    require_hooks(model, names)
    tokens = tokens_of(model, inputs)
    n_pos = tokens.shape[-1]
    if not -n_pos <= position < n_pos:
        raise OptionError(
            f"position {position} is out of range; this input has positions 0..{n_pos - 1}"
        )
    pos = position % n_pos
    inner = hooked_module(model)
    logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    m = cache[names[0]][0, pos].float()
    out = cache[names[1]][0, pos].float().cpu()
    w_out = inner.blocks[layer].mlp.W_out.detach().float()  # [d_mlp, d_model]
    norms = w_out.norm(dim=-1)
    scores_all = m.abs() * norms
    k = min(k_vectors, m.shape[0])
    top = scores_all.topk(k)
    idx = top.indices
    vectors = w_out[idx]
    updates = m[idx, None] * vectors
    dtype = next(inner.parameters()).dtype
    projected = unembed(model, updates.to(dtype)).float()  # [k, vocab]
    k_tok = min(k_tokens, projected.shape[-1])
    promoted = projected.topk(k_tok, dim=-1)
    suppressed = (-projected).topk(k_tok, dim=-1)
    # direct effect m_i (v_i . W_U[:, w]): the unembedding without its bias or the final norm
    zero = inner.unembed(torch.zeros_like(updates[:1]).to(dtype)).float()
    direct = inner.unembed(updates.to(dtype)).float() - zero
    pred_id = int(logits[0, pos].argmax())
    labels = _labels(model, torch.cat([promoted.indices, suppressed.indices]).flatten().tolist())
    return FfnUpdatesResult(
        model_name=model_name(model),
        layer=layer,
        position=pos,
        tokens=input_labels(model, tokens),
        prediction=output_labels(model, [pred_id])[0],
        indices=idx.cpu(),
        activations=m[idx].cpu(),
        norms=norms[idx].cpu(),
        scores=top.values.cpu(),
        vectors=vectors.cpu(),
        promoted_tokens=[[labels[i] for i in row] for row in promoted.indices.tolist()],
        suppressed_tokens=[[labels[i] for i in row] for row in suppressed.indices.tolist()],
        promoted_logits=promoted.values.cpu(),
        suppressed_logits=(-suppressed.values).cpu(),
        effect_on_prediction=direct[:, pred_id].cpu(),
        share_of_update=(top.values / scores_all.sum().clamp_min(1e-12)).cpu(),
        b_out=mlp_out_bias(model, layer, out.shape[-1]),
        mlp_out=out,
    )


def _labels(model: Any, ids: list[int]) -> dict[int, str]:
    unique = sorted(set(ids))
    return dict(zip(unique, output_labels(model, unique)))
