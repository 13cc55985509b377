"""The user cache folder and atomic writes into it."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """Where converted and trained models are kept: ``$MECHSCOPE_CACHE`` or the user cache.

    Read at call time (never at import), so tests and the app can point it elsewhere.
    """
    root = os.environ.get("MECHSCOPE_CACHE") or platformdirs.user_cache_dir("mechscope")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder that replaces ``target`` only when the block succeeds.

    A crash or kill inside the block leaves ``target`` as it was (absent or complete), never
    half-written.

    Example:
        >>> with atomic_folder(cache_dir() / "x") as tmp:   # doctest: +SKIP
        ...     (tmp / "a.json").write_text("{}")
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
