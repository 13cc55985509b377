"""``CompiledProgram``: a neutral description of a compiled transformer (numpy weights, TL names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CompiledProgram:
    """The weights and layout of a RASP program compiled to a transformer.

    Attributes:
        config: keyword arguments for TransformerLens' ``HookedTransformerConfig``.
        weights: float32 arrays named like TransformerLens' state dict (``blocks.0.attn.W_Q``).
        input_vocab: the token of each input id; ``input_vocab[0]`` is the BOS token.
        output_space: the value of each output logit (categorical output), or ``None`` for a
            numerical output, whose single logit is the value.
        residual_labels: one label per residual dimension (``"one"``, ``"tokens:3"``,
            ``"length:2"``, ``"frac_prevs"``).
        head_roles: what each non-empty head (``"L0H0"``) and MLP (``"L1.mlp"``) computes.
        head_exprs: ``"L0H0"`` -> label of the expression the head computes.
        mlp_exprs: ``"L1.mlp"`` -> labels of the expressions the MLP computes.
        layer_of: expression label -> layer where its value is written.
        program: label of the output expression.
        max_seq_len: longest input (without BOS).
        causal: whether attention is causal.
        compile_seconds: wall time of the compilation.

    Example:
        >>> from rasp import compile_program, library
        >>> cp = compile_program(library.make_reverse(), [1, 2, 3], 5)
        >>> cp.sizes()["layers"], cp.output_space
        (4, (1, 2, 3))
    """

    config: dict[str, Any]
    weights: dict[str, np.ndarray]
    input_vocab: tuple[Any, ...]
    output_space: tuple[Any, ...] | None
    residual_labels: list[str]
    head_roles: dict[str, str]
    head_exprs: dict[str, str]
    mlp_exprs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    layer_of: dict[str, int] = field(default_factory=dict)
    program: str = ""
    max_seq_len: int = 0
    causal: bool = False
    compile_seconds: float = 0.0

    @property
    def is_numerical(self) -> bool:
        """Whether the output is one numerical logit."""
        return self.output_space is None

    def sizes(self) -> dict[str, Any]:
        """Layers, heads per layer, widths, parameter count, active heads and compile time.

        Example:
            >>> from rasp import compile_program, length
            >>> compile_program(length, [1, 2, 3], 5).sizes()["layers"]
            1
        """
        cfg = self.config
        return {
            "layers": cfg["n_layers"],
            "heads": cfg["n_heads"],
            "d_model": cfg["d_model"],
            "d_head": cfg["d_head"],
            "d_mlp": cfg["d_mlp"],
            "n_params": int(sum(w.size for w in self.weights.values())),
            "active_heads": sorted(self.head_exprs),
            "compile_seconds": round(self.compile_seconds, 4),
        }

    def heads_of(self, label: str) -> list[str]:
        """Names (``"L1H0"``) of the heads that compute the expression ``label``."""
        return [name for name, expr in self.head_exprs.items() if expr == label]
