"""Compiled RASP programs as TransformerLens models: ``CompiledProgram`` -> ``LoadedModel``.

``rasp`` produces numpy weights named like TransformerLens' state dict; this module builds
the ``HookedTransformer``, loads them unchanged (no folding or centring, which would move
the labelled residual subspaces) and wraps the model with a codec and an output decoder.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from models.codec import TaskCodec
from models.errors import InputError, UnknownModelError
from models.loaded import LoadedModel, OutputDecoder
from models.spec import ModelSpec
from rasp import LIBRARY, CompiledProgram, SOp, compile_program

#: A categorical output whose largest logit is below this is "no value" (``None``).
NONE_THRESHOLD = 0.5


def build_hooked(compiled: CompiledProgram) -> HookedTransformer:
    """A ``HookedTransformer`` carrying the compiled weights exactly.

    Args:
        compiled: the output of ``rasp.compile_program``.

    Returns:
        The model in eval mode, on CPU, float32.

    Raises:
        ValueError: if a compiled weight has no parameter of that name and shape in the model.

    Example:
        >>> from rasp import compile_program, library
        >>> model = build_hooked(compile_program(library.make_hist(), [1, 2, 3], 5))
        >>> model.cfg.n_layers
        1
    """
    cfg = HookedTransformerConfig(**compiled.config, device="cpu", dtype=torch.float32)
    model = HookedTransformer(cfg)
    state = model.state_dict()  # keeps TL's buffers (masks, IGNORE)
    for name, array in compiled.weights.items():
        if name not in state or tuple(state[name].shape) != array.shape:
            have = tuple(state[name].shape) if name in state else "missing"
            raise ValueError(
                f"compiled weight {name} {array.shape} does not fit the model ({have})"
            )
        state[name] = torch.from_numpy(array.copy())
    missing = [k for k, v in model.named_parameters() if k not in compiled.weights]
    for name in missing:  # parameters the compiler leaves out are zero (e.g. unused biases)
        state[name] = torch.zeros_like(state[name])
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def make_decoder(compiled: CompiledProgram) -> OutputDecoder:
    """Decoder of ``[pos, d_vocab_out]`` logits (BOS dropped) to output values.

    Categorical: ``output_space[argmax]``, or ``None`` where every logit is below
    ``NONE_THRESHOLD`` (the program's "no value"). Numerical: the single logit as a float.
    """
    space = compiled.output_space

    def decode(logits: torch.Tensor) -> list:
        if space is None:
            return [float(x) for x in logits[:, 0].tolist()]
        best = logits.max(dim=-1)
        return [
            None if v < NONE_THRESHOLD else space[i]
            for v, i in zip(best.values.tolist(), best.indices.tolist())
        ]

    return decode


def wrap_compiled(
    compiled: CompiledProgram, name: str, provenance: dict[str, str] | None = None
) -> LoadedModel:
    """A ``LoadedModel`` (kind ``rasp``) around a compiled program."""
    codec = TaskCodec(
        vocab=("BOS", *compiled.input_vocab[1:]),
        max_len=compiled.max_seq_len,
        output_vocab=compiled.output_space,
    )
    sizes = compiled.sizes()
    prov = {
        "source": "rasp compiler",
        "program": compiled.program,
        "vocab": repr(list(compiled.input_vocab[1:])),
        "max_seq_len": str(compiled.max_seq_len),
        "causal": str(compiled.causal),
        "compile_seconds": f"{compiled.compile_seconds:.4f}",
        "n_params": str(sizes["n_params"]),
        **(provenance or {}),
    }
    return LoadedModel(
        model=build_hooked(compiled),
        spec=ModelSpec("rasp", name, f"rasp:{name}"),
        kind="rasp",
        provenance=prov,
        codec=codec,
        output_decoder=make_decoder(compiled),
        head_roles=dict(compiled.head_roles),
        residual_labels=list(compiled.residual_labels),
    )


def load_compiled(
    program: SOp,
    vocab: Sequence[Hashable],
    max_seq_len: int,
    *,
    causal: bool = False,
    name: str | None = None,
) -> LoadedModel:
    """Compile a RASP program and load it as a TransformerLens model.

    Args:
        program: the output s-op.
        vocab: input values (BOS excluded).
        max_seq_len: longest input.
        causal: causal attention (only for causal-safe programs).
        name: the model name (defaults to the program's label).

    Returns:
        A ``LoadedModel`` whose ``predict`` returns the program's outputs.

    Raises:
        rasp.RaspError: when the program cannot be compiled.

    Example:
        >>> from rasp import library
        >>> load_compiled(library.make_reverse(), [1, 2, 3], 5).predict([3, 1, 2])
        [2, 1, 3]
    """
    compiled = compile_program(program, vocab, max_seq_len, causal=causal)
    return wrap_compiled(compiled, name or program.label)


def list_library_programs() -> list[str]:
    """Names usable as ``rasp:<name>``."""
    return sorted(LIBRARY)


def load_library_program(name: str, *, causal: bool = False) -> LoadedModel:
    """Compile a library program with its default vocabulary and length.

    Raises:
        UnknownModelError: for a name not in the library (the message lists them).

    Example:
        >>> load_library_program("sort_unique").predict([3, 1, 5, 2])
        [1, 2, 3, 5]
    """
    entry = LIBRARY.get(name)
    if entry is None:
        raise UnknownModelError(
            f"unknown RASP program {name!r}; library: {', '.join(list_library_programs())}"
        )
    compiled = compile_program(entry.build(), entry.vocab, entry.max_seq_len, causal=causal)
    return wrap_compiled(compiled, name, {"description": entry.description})


@torch.inference_mode()
def predict_batch(loaded: LoadedModel, sequences: Sequence[Sequence[Any]]) -> list[list]:
    """Decoded outputs of many inputs, run in one forward pass per input length.

    Raises:
        InputError: for a model without a codec or an invalid sequence.
    """
    if loaded.codec is None or loaded.output_decoder is None:
        raise InputError(f"predict_batch needs a task-vocabulary model; {loaded.name!r} has none")
    results: list[list | None] = [None] * len(sequences)
    by_len: dict[int, list[int]] = {}
    for i, seq in enumerate(sequences):
        by_len.setdefault(len(seq), []).append(i)
    for idx in by_len.values():
        tokens = loaded.codec.to_tokens([sequences[i] for i in idx])
        logits = loaded.model(tokens)[:, 1:].float()
        for row, i in enumerate(idx):
            results[i] = loaded.output_decoder(logits[row])
    return results  # type: ignore[return-value]
