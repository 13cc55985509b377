"""The small interface analysis backends are typed against.

``models.LoadedModel`` satisfies it, and so does a TransformerLens ``HookedTransformer`` or
``TransformerBridge`` with a tokenizer; ``analysis`` never imports ``models``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class HookedModel(Protocol):
    """What an analysis needs from a model."""

    cfg: Any

    def to_tokens(self, inputs: Any) -> torch.Tensor: ...
    def run_with_cache(self, *args: Any, **kwargs: Any) -> Any: ...
    def hooks(self, *args: Any, **kwargs: Any) -> Any: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


Inputs = str | Sequence[Hashable] | torch.Tensor


def hooked_module(model: Any) -> Any:
    """The TransformerLens model itself: a ``LoadedModel``'s ``.model``, or ``model`` when it
    already is one (a ``TransformerBridge`` has a ``.model`` of its own: the HF module).
    """
    return model if hasattr(model, "hook_dict") else model.model


def model_device(model: Any) -> torch.device:
    """The device of the model's weights (inputs and gates are moved there)."""
    for param in hooked_module(model).parameters():
        return param.device
    return torch.device("cpu")


def tokens_of(model: Any, inputs: Inputs) -> torch.Tensor:
    """A ``[1, pos]`` id tensor: prompts and task sequences go through ``model.to_tokens``."""
    if isinstance(inputs, torch.Tensor):
        return inputs if inputs.ndim == 2 else inputs.unsqueeze(0)
    return model.to_tokens(inputs)


def input_labels(model: Any, tokens: torch.Tensor) -> list[str]:
    """One label per input position of a ``[1, pos]`` or ``[pos]`` id tensor."""
    ids = tokens.reshape(-1).tolist()
    codec = getattr(model, "codec", None)
    if codec is not None:
        return [str(codec.vocab[i]) for i in ids]
    inner = hooked_module(model)
    return list(inner.to_str_tokens(torch.tensor(ids)))


def output_labels(model: Any, ids: Sequence[int]) -> list[str]:
    """Labels of output classes (task models have an output vocabulary of their own)."""
    codec = getattr(model, "codec", None)
    if codec is not None and codec.output_vocab is not None:
        return [str(codec.output_vocab[i]) for i in ids]
    inner = hooked_module(model)
    return list(inner.to_str_tokens(torch.tensor(list(ids), dtype=torch.long)))


def unembed(model: Any, resid: torch.Tensor) -> torch.Tensor:
    """Logits from a residual stream: the model's final norm, then its unembedding."""
    inner = hooked_module(model)
    norm = getattr(inner, "ln_final", None)  # absent when normalization_type is None
    return inner.unembed(norm(resid) if norm is not None else resid)


def model_name(model: Any) -> str:
    """A display name for results."""
    return str(getattr(model, "name", None) or getattr(model.cfg, "model_name", "model"))
