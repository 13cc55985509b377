"""Parse a model string (``task:sort``, ``rasp:reverse``, ``smollm2-135m``, a folder, a hub name)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from models.errors import UnknownModelError

ModelKind = Literal["task", "rasp", "program", "builtin", "folder", "gguf", "hub"]

#: Pretrained models that ship inside a PyPI package and load with no network.
BUILTIN_PRETRAINED = ("smollm2-135m",)

_PREFIXED = ("task", "rasp", "program", "hf")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class ModelSpec:
    """What to load, parsed from a user string.

    Attributes:
        kind: ``task`` (trained in-repo), ``rasp`` (compiled library program), ``program``
            (learned Transformer Program), ``builtin`` (offline pretrained), ``folder`` (a local
            Hugging Face folder), ``gguf`` (a local GGUF file) or ``hub`` (a hub name).
        name: the task/program name, the built-in name, the resolved path or the hub id.
        text: the string the spec was parsed from.

    Example:
        >>> ModelSpec.parse("task:sort")
        ModelSpec(kind='task', name='sort', text='task:sort')
    """

    kind: ModelKind
    name: str
    text: str

    @staticmethod
    def parse(text: str | Path) -> ModelSpec:
        """Parse ``text`` into a spec.

        Raises:
            UnknownModelError: for an empty string or one of no recognised form.
        """
        raw = str(text).strip()
        if not raw:
            raise UnknownModelError(f"empty model name; {valid_forms()}")
        prefix, sep, rest = raw.partition(":")
        if sep and prefix in _PREFIXED:
            if not rest:
                raise UnknownModelError(f"model {raw!r} names no {prefix}; {valid_forms()}")
            kind: ModelKind = "hub" if prefix == "hf" else prefix  # type: ignore[assignment]
            return ModelSpec(kind, rest, raw)
        if raw.lower() in BUILTIN_PRETRAINED:
            return ModelSpec("builtin", raw.lower(), raw)
        path = Path(raw).expanduser()
        if path.exists():
            kind = "gguf" if path.is_file() and path.suffix == ".gguf" else "folder"
            return ModelSpec(kind, str(path.resolve()), raw)
        if raw.startswith(("/", ".", "~")) or raw.endswith(".gguf"):
            raise UnknownModelError(f"no such file or folder {raw!r}; {valid_forms()}")
        if _HUB_NAME.match(raw):
            return ModelSpec("hub", raw, raw)
        raise UnknownModelError(f"unknown model {raw!r}; {valid_forms()}")


def valid_forms() -> str:
    """One sentence listing the model strings that are understood."""
    return (
        "valid: task:<task> (e.g. task:sort), rasp:<program> (e.g. rasp:reverse), "
        "program:<task> (e.g. program:sort), "
        f"{', '.join(BUILTIN_PRETRAINED)}, a local Hugging Face folder or .gguf file, "
        "or a hub name such as HuggingFaceTB/SmolLM2-135M"
    )
