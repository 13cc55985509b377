"""Small public-domain text corpora shipped with mechscope (see ``models/data/corpus/README.md``).

Used to fit and evaluate lenses without a network: ``load_corpus()`` returns chunks of a few
hundred characters, ``split_corpus`` a deterministic train / held-out split.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from models.errors import CheckpointError, UnknownModelError

#: Shipped corpora: name -> folder of UTF-8 ``.txt`` files (paragraphs split by blank lines).
CORPORA: dict[str, Path] = {"default": Path(__file__).parent / "data" / "corpus"}


def load_corpus(name: str = "default", *, chunk_chars: int = 400) -> list[str]:
    """The corpus as text chunks: runs of whole paragraphs of about ``chunk_chars`` characters.

    Paragraphs (speeches, headings) are joined with newlines until a chunk reaches
    ``chunk_chars``; a chunk never spans two files. The order is the files' sorted order, so the
    result is the same on every machine.

    Args:
        name: a corpus in ``CORPORA`` (``default``: four Shakespeare plays, about 490 KB).
        chunk_chars: the size a chunk grows to before a new one starts.

    Returns:
        The chunks, each non-empty.

    Raises:
        UnknownModelError: an unknown corpus name (the message lists the valid ones).
        CheckpointError: a corpus folder without text files, or a file that is not UTF-8.

    Example:
        >>> chunks = load_corpus()
        >>> len(chunks) > 1000
        True
    """
    if name not in CORPORA:
        raise UnknownModelError(f"unknown corpus {name!r}; valid: {', '.join(CORPORA)}")
    if chunk_chars < 1:
        raise ValueError(f"chunk_chars must be at least 1, got {chunk_chars}")
    files = sorted(CORPORA[name].glob("*.txt"))
    if not files:
        raise CheckpointError(f"{CORPORA[name]}: corpus {name!r} has no .txt files")
    chunks: list[str] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"{path}: not UTF-8 text ({exc})") from exc
        current: list[str] = []
        size = 0
        for paragraph in (p.strip() for p in text.split("\n\n")):
            if not paragraph:
                continue
            current.append(paragraph)
            size += len(paragraph) + 1
            if size >= chunk_chars:
                chunks.append("\n".join(current))
                current, size = [], 0
        if current:
            chunks.append("\n".join(current))
    return chunks


def split_corpus(
    texts: Sequence[str], held_out_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """A deterministic ``(train, held_out)`` split of ``texts`` by position.

    The same ``texts``, fraction and seed always give the same split; the two parts are disjoint
    by index (and so by text unless ``texts`` repeats itself). Uses its own RNG: the global
    random state is neither read nor changed.

    Raises:
        ValueError: a fraction outside (0, 1) or a split that would leave a part empty.

    Example:
        >>> train, held_out = split_corpus(load_corpus(), 0.2, seed=0)
    """
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    n_held = round(len(texts) * held_out_fraction)
    if n_held == 0 or n_held == len(texts):
        raise ValueError(
            f"a fraction of {held_out_fraction} of {len(texts)} texts leaves one part empty"
        )
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    held = sorted(order[:n_held])
    train = sorted(order[n_held:])
    return [texts[i] for i in train], [texts[i] for i in held]
