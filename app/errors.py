"""The app's error boundary: known mechscope errors become ``st.error``, never a traceback.

Every package keeps one base error class in its ``errors.py``. Those listed in
``_ERROR_BASES`` are shown as a plain ``st.error`` holding the error's message (which says
what was wrong and what is valid). Anything else is a bug: the user gets a one-line summary
and an expander with the details to paste into a bug report.

Example:
    >>> with error_boundary():                # doctest: +SKIP
    ...     model.predict(values)
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

#: ``(module, class)`` of each package's base error. Add a line when a package gains one;
#: a module that does not exist yet is skipped.
_ERROR_BASES: tuple[tuple[str, str], ...] = (
    ("models.errors", "ModelError"),
    ("rasp.errors", "RaspError"),
    ("analysis.errors", "AnalysisError"),
    ("probes.errors", "ProbeError"),
)


def _import_error_bases() -> tuple[type[Exception], ...]:
    bases: list[type[Exception]] = []
    for module_name, class_name in _ERROR_BASES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        cls = getattr(module, class_name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            bases.append(cls)
    return tuple(bases)


#: The error classes whose message is shown as is: the user's input was at fault.
KNOWN_ERRORS: tuple[type[Exception], ...] = _import_error_bases()


def is_known_error(exc: BaseException) -> bool:
    """Whether ``exc`` is one of mechscope's own errors (bad input, not a bug)."""
    return isinstance(exc, KNOWN_ERRORS)


def show_exception(exc: Exception, action: str | None = None) -> None:
    """Show an exception as ``st.error``: the message for known errors, a summary otherwise.

    Args:
        exc: the exception caught.
        action: what was being done, e.g. ``"loading task:sort"``, for unknown errors.
    """
    if is_known_error(exc):
        st.error(str(exc), icon=":material/error:")
        return
    where = f" while {action}" if action else ""
    summary = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    st.error(
        f"Something went wrong{where}: {type(exc).__name__}"
        + (f": {summary[:300]}" if summary else ""),
        icon=":material/bug_report:",
    )
    with st.expander("Details for a bug report"):
        st.code("".join(traceback.format_exception(exc)), language=None)


@contextmanager
def error_boundary(action: str | None = None) -> Iterator[None]:
    """Catch any exception in the block (or decorated function) and show it in the app.

    The exception is not re-raised, so the rest of the page still renders. Streamlit's own
    control flow (``st.stop``, ``st.rerun``) derives from ``BaseException`` and passes through.

    Args:
        action: what the block does, named in the message of unexpected errors.

    Example:
        >>> @error_boundary("drawing the home page")     # doctest: +SKIP
        ... def render(model): ...
    """
    try:
        yield
    except Exception as exc:
        show_exception(exc, action)
