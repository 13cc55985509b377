"""``LoadedModel``: a hooked TransformerLens model plus what is needed to feed and read it."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from models.codec import TaskCodec
from models.errors import InputError
from models.spec import ModelSpec

LoadedKind = Literal["task", "rasp", "program", "pretrained"]

#: Decodes a ``[pos, d_vocab_out]`` logit tensor (BOS row dropped) to output values.
OutputDecoder = Callable[[torch.Tensor], list]


@dataclass(frozen=True)
class ModelCard:
    """What the dashboard's home page shows about a model."""

    name: str
    kind: LoadedKind
    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_mlp: int | None
    d_vocab: int
    d_vocab_out: int
    n_ctx: int
    n_params: int
    provenance: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return dict(self.__dict__)


@dataclass(eq=False)
class LoadedModel:
    """A model ready for analysis: every kind of model ends as one of these.

    It satisfies the small protocol ``analysis`` is typed against (``cfg``, ``to_tokens``,
    ``to_str_tokens``, ``run_with_cache``, ``hooks``, calling it), delegating to the hooked model.

    Attributes:
        model: a TransformerLens ``HookedTransformer`` (or ``TransformerBridge``).
        spec: the spec it was loaded from.
        kind: ``task``, ``rasp``, ``program`` or ``pretrained``.
        provenance: where it came from (file, hash, training settings, versions).
        codec: the token codec of task-vocabulary models, else ``None``.
        tokenizer: the Hugging Face tokenizer of pretrained models, else ``None``.
        output_decoder: turns logits into output values (task-vocabulary models only).
        head_roles: ``{"L0H1": "what it computes"}`` where roles are known by construction.
        residual_labels: one label per residual dimension where known by construction
            (compiled models: ``"tokens:3"``, ``"length"``), else ``None``.

    Example:
        >>> lm = load_model("task:sort")             # doctest: +SKIP
        >>> lm.predict([3, 1, 2])                    # doctest: +SKIP
        [1, 2, 3]
    """

    model: Any
    spec: ModelSpec
    kind: LoadedKind
    provenance: dict[str, str] = field(default_factory=dict)
    codec: TaskCodec | None = None
    tokenizer: Any | None = None
    output_decoder: OutputDecoder | None = None
    head_roles: dict[str, str] | None = None
    residual_labels: list[str] | None = None

    # -- the analysis protocol -------------------------------------------------------------
    @property
    def cfg(self) -> Any:
        """The TransformerLens config of the hooked model."""
        return self.model.cfg

    @property
    def name(self) -> str:
        """The string the model was loaded from."""
        return self.spec.text

    def run_with_cache(self, *args: Any, **kwargs: Any) -> Any:
        """``model.run_with_cache``; pass ``names_filter`` on big models."""
        return self.model.run_with_cache(*args, **kwargs)

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any:
        """``model.run_with_hooks``."""
        return self.model.run_with_hooks(*args, **kwargs)

    def hooks(self, *args: Any, **kwargs: Any) -> Any:
        """``model.hooks`` context manager."""
        return self.model.hooks(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def to_tokens(self, inputs: str | Sequence[Hashable]) -> torch.Tensor:
        """A ``[1, pos]`` id tensor for a prompt (pretrained) or a task sequence.

        Raises:
            InputError: empty input, input past the context, or tokens outside the vocabulary.
        """
        if self.codec is not None:
            if isinstance(inputs, str):
                inputs = [self.codec.parse_value(t) for t in inputs.split()]
            return self.codec.to_tokens([inputs])
        if not isinstance(inputs, str):
            raise InputError(
                f"model {self.name!r} takes a text prompt, got {type(inputs).__name__}"
            )
        if not inputs.strip():
            raise InputError("empty prompt: type some text")
        tokens = self.model.to_tokens(inputs, prepend_bos=True, truncate=False)
        if tokens.shape[-1] > self.cfg.n_ctx:
            raise InputError(
                f"prompt is {tokens.shape[-1]} tokens; {self.name} takes at most {self.cfg.n_ctx}"
            )
        return tokens

    def to_str_tokens(self, inputs: str | Sequence[Hashable] | torch.Tensor) -> list[str]:
        """String labels of the tokens ``to_tokens`` makes (one per position), or of an id
        tensor (``[pos]`` or ``[1, pos]``) as TransformerLens' ``to_str_tokens`` takes.

        Raises:
            InputError: bad inputs, or a tensor of several rows or with ids outside the vocabulary.
        """
        if isinstance(inputs, torch.Tensor):
            tokens = inputs.reshape(1, -1) if inputs.ndim == 1 else inputs
            if tokens.ndim != 2 or tokens.shape[0] != 1:
                raise InputError(
                    f"expected ids of shape [pos] or [1, pos], got {tuple(inputs.shape)}"
                )
            if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.d_vocab):
                raise InputError(f"token ids must lie in 0..{self.cfg.d_vocab - 1}")
        else:
            tokens = self.to_tokens(inputs)
        if self.codec is not None:
            return [str(self.codec.vocab[i]) for i in tokens[0].tolist()]
        return list(self.model.to_str_tokens(tokens[0]))

    # -- task use --------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, sequence: Sequence[Hashable] | str) -> list:
        """Run the model on one task input and decode one output per input position.

        Raises:
            InputError: for a pretrained model (use ``generate``) or an invalid sequence.
        """
        if self.codec is None or self.output_decoder is None:
            raise InputError(
                f"predict() needs a task-vocabulary model; {self.name!r} is {self.kind}: use generate()"
            )
        tokens = self.to_tokens(sequence)
        logits = self.model(tokens)
        return self.output_decoder(logits[0, 1:].float())

    @torch.inference_mode()
    def generate(self, prompt: str, max_new_tokens: int = 16) -> str:
        """Greedy completion of a text prompt (pretrained models).

        Raises:
            InputError: for a task-vocabulary model, an empty prompt or one past the context.
        """
        if self.codec is not None:
            raise InputError(
                f"generate() needs a text model; {self.name!r} is {self.kind}: use predict()"
            )
        tokens = self.to_tokens(prompt)
        eos = getattr(self.tokenizer, "eos_token_id", None)
        for _ in range(max_new_tokens):
            if tokens.shape[-1] >= self.cfg.n_ctx:
                break
            next_id = self.model(tokens)[0, -1].argmax()
            tokens = torch.cat([tokens, next_id.view(1, 1)], dim=-1)
            if eos is not None and int(next_id) == eos:
                break
        prompt_len = self.to_tokens(prompt).shape[-1]
        return self.model.to_string(tokens[0, prompt_len:])

    def card(self) -> ModelCard:
        """Sizes and provenance, for display."""
        cfg = self.cfg
        return ModelCard(
            name=self.name,
            kind=self.kind,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            d_model=cfg.d_model,
            d_head=cfg.d_head,
            d_mlp=None if getattr(cfg, "attn_only", False) else cfg.d_mlp,
            d_vocab=cfg.d_vocab,
            d_vocab_out=cfg.d_vocab_out,
            n_ctx=cfg.n_ctx,
            n_params=sum(p.numel() for p in self.model.parameters()),
            provenance=dict(self.provenance),
        )
