"""The mechscope dashboard: ``streamlit run app/main.py`` (or ``mechscope app --model X``).

The sidebar picks and loads a model once (cached); every page is a ``render(model)`` function
listed in ``app.views.PAGES`` and runs inside the error boundary.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    # `streamlit run app/main.py` puts app/ on sys.path, not the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st

from app.errors import error_boundary
from app.state import load_choice, model_picker
from app.views import PAGES, PageEntry
from models import LoadedModel


def _page_function(entry: PageEntry, model: LoadedModel | None) -> Callable[[], None]:
    def run() -> None:
        if model is None:
            st.info("No model is loaded: pick one in the sidebar.", icon=":material/info:")
            return
        with error_boundary(f"drawing the {entry.title} page"):
            importlib.import_module(f"app.views.{entry.module}").render(model)

    return run


def _run_navigation(model: LoadedModel | None) -> None:
    sections: dict[str, list] = {}
    for entry in PAGES:
        page = st.Page(
            _page_function(entry, model),
            title=entry.title,
            icon=entry.icon,
            url_path=entry.url_path,
            default=entry.default,
        )
        sections.setdefault(entry.section, []).append(page)
    st.navigation(sections).run()


def _apply_thread_setting() -> None:
    """Use ``MECHSCOPE_THREADS`` torch threads when set (``mechscope app --threads N``).

    With another busy process on the machine, fewer threads can be much faster than torch's
    default, so the count is a deliberate setting rather than a guess.
    """
    threads = os.environ.get("MECHSCOPE_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        import torch

        torch.set_num_threads(int(threads))


def main() -> None:
    """Draw the sidebar, load the model and run the selected page."""
    st.set_page_config(
        page_title="mechscope",
        page_icon=":material/biotech:",
        layout="wide",
        initial_sidebar_state="expanded",
    )
    _apply_thread_setting()
    choice = None
    with error_boundary("reading the model picker"):
        choice = model_picker()
    model: LoadedModel | None = None
    if choice is not None:
        with error_boundary(f"loading {choice.label}"):
            model = load_choice(choice)
    st.sidebar.divider()
    st.sidebar.caption("mechscope · mechanistic interpretability workbench")
    _run_navigation(model)


main()
