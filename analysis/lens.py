"""Logit lens (and, with translators, the tuned lens): what each layer would predict.

For every layer, the residual stream entering that block (and, last, the final residual) is
passed through the model's final norm and unembedding. The last row is exactly the model's own
output, which the tests check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from analysis.errors import OptionError
from analysis.hooks import require_hooks, resid_post, resid_pre
from analysis.protocol import (
    Inputs,
    hooked_module,
    input_labels,
    model_name,
    output_labels,
    tokens_of,
    unembed,
)

#: Positions unembedded at once: bounds a lens's memory to a few ``[chunk, vocab]`` tensors.
POSITION_CHUNK = 256

#: Maps (row index, residual ``[pos, d_model]``) to the residual the unembedding should read.
Translator = Callable[[int, Tensor], Tensor]


@dataclass(frozen=True)
class LensResult:
    """Per-layer, per-position predictions of a lens.

    Attributes:
        model_name: the model.
        method: ``logit`` or ``tuned``.
        tokens: input position labels.
        layer_labels: one per row: ``L0 in`` .. ``L{n-1} in`` then ``final``.
        top_ids, top_probs: ``[layer, pos, k]`` top-k output ids and probabilities.
        top_tokens: ``[layer][pos][k]`` labels of ``top_ids``.
        kl_to_final: ``[layer, pos]`` KL(final distribution || lens distribution), nats.
        entropy: ``[layer, pos]`` entropy of the lens distribution, nats.
        target: the target token's label, or ``None``.
        target_prob, target_rank: ``[layer, pos]`` probability and rank (0 = top) of the target.
    """

    model_name: str
    method: Literal["logit", "tuned"]
    tokens: list[str]
    layer_labels: list[str]
    top_ids: Int[Tensor, "layer pos k"]
    top_probs: Float[Tensor, "layer pos k"]
    top_tokens: list[list[list[str]]] = field(repr=False)
    kl_to_final: Float[Tensor, "layer pos"] = field(repr=False)
    entropy: Float[Tensor, "layer pos"] = field(repr=False)
    target: str | None = None
    target_prob: Float[Tensor, "layer pos"] | None = field(default=None, repr=False)
    target_rank: Int[Tensor, "layer pos"] | None = field(default=None, repr=False)

    def first_layer_in_top(self, token: str, k: int, position: int = -1) -> str | None:
        """The first row whose top-``k`` at ``position`` holds ``token`` (``None`` if never)."""
        for row, label in enumerate(self.layer_labels):
            if token in self.top_tokens[row][position][:k]:
                return label
        return None

    def to_frame(self) -> pd.DataFrame:
        """Long frame: one row per (layer, position) with top-1, KL, entropy and target stats."""
        rows = []
        for i, layer in enumerate(self.layer_labels):
            for p, token in enumerate(self.tokens):
                row = {"layer": layer, "position": p, "token": token,
                       "top1": self.top_tokens[i][p][0], "top1_prob": float(self.top_probs[i, p, 0]),
                       "kl_to_final": float(self.kl_to_final[i, p]), "entropy": float(self.entropy[i, p])}  # fmt: skip
                if self.target_prob is not None and self.target_rank is not None:
                    row |= {"target_prob": float(self.target_prob[i, p]),
                            "target_rank": int(self.target_rank[i, p])}  # fmt: skip
                rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        out = {"model_name": self.model_name, "method": self.method, "tokens": self.tokens,
               "layer_labels": self.layer_labels, "top_tokens": self.top_tokens,
               "top_probs": self.top_probs.tolist(), "kl_to_final": self.kl_to_final.tolist(),
               "entropy": self.entropy.tolist(), "target": self.target}  # fmt: skip
        if self.target_prob is not None and self.target_rank is not None:
            out |= {
                "target_prob": self.target_prob.tolist(),
                "target_rank": self.target_rank.tolist(),
            }
        return out


def lens_hooks(n_layers: int) -> list[str]:
    """The residual hooks a lens reads: ``resid_pre`` of every block, then the final residual."""
    return [resid_pre(layer) for layer in range(n_layers)] + [resid_post(n_layers - 1)]


def resolve_target(model: Any, target: str) -> int:
    """The output id of a target token label.

    Raises:
        OptionError: an empty target, one not in a task model's outputs, or one that is not a
            single token of a text model.
    """
    if not target:
        raise OptionError("empty target token")
    codec = getattr(model, "codec", None)
    if codec is not None and codec.output_vocab is not None:
        labels = [str(v) for v in codec.output_vocab]
        if target.strip() not in labels:
            raise OptionError(
                f"target {target!r} is not an output of this model; valid: {', '.join(labels)}"
            )
        return labels.index(target.strip())
    inner = hooked_module(model)
    ids = inner.to_tokens(target, prepend_bos=False)[0].tolist()
    if len(ids) != 1:
        pieces = output_labels(model, ids)
        raise OptionError(f"target {target!r} is {len(ids)} tokens {pieces}; give a single token")
    unknown = getattr(getattr(inner, "tokenizer", None), "unk_token_id", None)
    if unknown is not None and ids[0] == unknown:
        raise OptionError(
            f"target {target!r} is not in the vocabulary (it maps to the unknown token)"
        )
    return ids[0]


@torch.inference_mode()
def run_lens(
    model: Any,
    inputs: Inputs,
    *,
    target: str | None = None,
    k: int = 10,
    translator: Translator | None = None,
    method: Literal["logit", "tuned"] = "logit",
) -> LensResult:
    """The lens of every layer on one input; ``translator`` turns the logit lens into another.

    Memory stays bounded on long prompts: positions are processed in chunks of
    ``POSITION_CHUNK``, and each row's ``[chunk, vocab]`` logits are reduced at once to top-k,
    KL, entropy and target statistics.
    """
    if k < 1:
        raise OptionError(f"k must be at least 1, got {k}")
    n_layers = model.cfg.n_layers
    names = lens_hooks(n_layers)
    require_hooks(model, names)
    tokens = tokens_of(model, inputs)
    target_id = resolve_target(model, target) if target is not None else None
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    residuals = [cache[name][0] for name in names]
    del cache
    if translator is not None:
        residuals[:n_layers] = [
            translator(row, resid) for row, resid in enumerate(residuals[:n_layers])
        ]
    n_pos = residuals[0].shape[0]
    parts: list[dict[str, Tensor]] = [
        _reduce_rows(model, [r[start : start + POSITION_CHUNK] for r in residuals], k, target_id)
        for start in range(0, n_pos, POSITION_CHUNK)
    ]
    rows = {key: torch.cat([part[key] for part in parts], dim=1) for key in parts[0]}
    top_ids = rows["ids"].cpu()
    vocab_labels = _labels_for(model, top_ids)
    return LensResult(
        model_name=model_name(model),
        method=method,
        tokens=input_labels(model, tokens),
        layer_labels=[f"L{layer} in" for layer in range(n_layers)] + ["final"],
        top_ids=top_ids,
        top_probs=rows["probs"].cpu(),
        top_tokens=[
            [[vocab_labels[i] for i in pos] for pos in layer] for layer in top_ids.tolist()
        ],
        kl_to_final=rows["kl"].cpu(),
        entropy=rows["ent"].cpu(),
        target=None if target_id is None else output_labels(model, [target_id])[0],
        target_prob=rows["tp"].cpu() if target_id is not None else None,
        target_rank=rows["tr"].cpu() if target_id is not None else None,
    )


def _reduce_rows(
    model: Any, residuals: list[Tensor], k: int, target_id: int | None
) -> dict[str, Tensor]:
    """Top-k, KL to the last row, entropy and target stats of every row, for one position chunk."""
    final_logp = unembed(model, residuals[-1]).float().log_softmax(-1)
    final_p = final_logp.exp()
    neg_final_entropy = (final_p * final_logp).sum(-1)
    k = min(k, final_logp.shape[-1])
    out: dict[str, list[Tensor]] = {key: [] for key in ("ids", "probs", "kl", "ent", "tp", "tr")}
    for row, resid in enumerate(residuals):
        last = row == len(residuals) - 1
        logp = final_logp if last else unembed(model, resid).float().log_softmax(-1)
        top = logp.topk(k, dim=-1)
        out["ids"].append(top.indices)
        out["probs"].append(top.values.exp())
        # KL(final || lens) = sum p_f log p_f - sum p_f log p_lens, without a [pos, vocab] temporary.
        kl = neg_final_entropy - (final_p * logp).sum(-1)
        out["kl"].append(torch.zeros_like(kl) if last else kl.clamp_min(0))
        out["ent"].append(-(logp.exp() * logp).sum(-1))
        if target_id is not None:
            out["tp"].append(logp[:, target_id].exp())
            out["tr"].append((logp > logp[:, target_id : target_id + 1]).sum(-1))
    return {key: torch.stack(values) for key, values in out.items() if values}


def run_logit_lens(
    model: Any, inputs: Inputs, *, target: str | None = None, k: int = 10
) -> LensResult:
    """The logit lens: final norm + unembedding applied to every layer's residual stream.

    Args:
        model: a hooked model.
        inputs: a prompt, a task sequence or a ``[1, pos]`` token tensor.
        target: a single token whose probability and rank are tracked (optional).
        k: how many top tokens to keep per layer and position.

    Returns:
        A ``LensResult`` with ``n_layers + 1`` rows; the last equals the model's own output.

    Raises:
        OptionError: ``k < 1`` or a target that is not a single output token.

    Example:
        >>> lens = run_logit_lens(load_model("smollm2-135m"), "The capital of France is")  # doctest: +SKIP
        >>> lens.top_tokens[-1][-1][0]                                                      # doctest: +SKIP
        ' Paris'
    """
    return run_lens(model, inputs, target=target, k=k)


def _labels_for(model: Any, ids: Tensor) -> dict[int, str]:
    unique = sorted(set(ids.flatten().tolist()))
    return dict(zip(unique, output_labels(model, unique)))
