"""The sidebar model picker and the cached model loader shared by every page.

The picker offers the built-in models grouped by kind, a free text field for a local Hugging
Face folder, a ``.gguf`` file or a hub name, and the backend for pretrained models. Models
are loaded once per (spec, backend) with ``st.cache_resource`` and shared by all sessions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import streamlit as st

from models import LoadedModel, ModelInfo, list_models, load_model
from models.pretrained import BACKENDS, DEFAULT_BACKEND
from models.spec import BUILTIN_PRETRAINED

#: The model opened when ``MECHSCOPE_DEFAULT_MODEL`` is not set.
FALLBACK_MODEL = "task:sort"

#: Kinds in the order the picker shows them, with their labels.
KIND_LABELS: dict[str, str] = {
    "task": "Task",
    "rasp": "RASP",
    "program": "Program",
    "pretrained": "Pretrained",
}

#: Spec prefixes of models with a small task vocabulary (no backend choice).
_TASK_VOCAB_PREFIXES = ("task:", "rasp:", "program:")

KEY_KIND = "mechscope.kind"
KEY_CUSTOM = "mechscope.custom"
KEY_BACKEND = "mechscope.backend"


def key_builtin(kind: str) -> str:
    """Session key of the built-in model selectbox of one kind."""
    return f"mechscope.builtin.{kind}"


@dataclass(frozen=True)
class ModelChoice:
    """What the sidebar asks to load.

    Attributes:
        spec: the model string, as ``load_model`` takes it.
        backend: ``bridge`` or ``hooked`` (used for pretrained models only).
    """

    spec: str
    backend: str = DEFAULT_BACKEND

    @property
    def is_pretrained(self) -> bool:
        """Whether the spec names a pretrained model (not a task-vocabulary one)."""
        return not self.spec.startswith(_TASK_VOCAB_PREFIXES)

    @property
    def label(self) -> str:
        """Short text naming the model, with its backend when it matters."""
        return f"{self.spec} ({self.backend})" if self.is_pretrained else self.spec


def default_model() -> str:
    """The model to open: ``$MECHSCOPE_DEFAULT_MODEL`` (read at call time) else task:sort."""
    return os.environ.get("MECHSCOPE_DEFAULT_MODEL", "").strip() or FALLBACK_MODEL


def kind_of(spec: str) -> str:
    """The picker group of a model string: ``task``, ``rasp``, ``program`` or ``pretrained``."""
    prefix = spec.partition(":")[0] if ":" in spec else ""
    return prefix if prefix in ("task", "rasp", "program") else "pretrained"


@st.cache_resource(show_spinner=False)
def _list_models_cached() -> tuple[ModelInfo, ...]:
    return tuple(list_models())


def builtin_models() -> tuple[ModelInfo, ...]:
    """Every built-in model, from ``list_models()`` (cached once it succeeds).

    While a models sub-package is missing (or broken), fall back to the offline pretrained
    models so the app still opens on whatever can load; the failure is not cached.
    """
    try:
        return _list_models_cached()
    except Exception:
        return tuple(
            ModelInfo(n, "pretrained", "offline pretrained model") for n in BUILTIN_PRETRAINED
        )


def describe(spec: str) -> str | None:
    """The one-line description of a built-in model, or ``None``."""
    for info in builtin_models():
        if info.name == spec:
            return info.description
    return None


def _grouped(infos: tuple[ModelInfo, ...], default: str) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {kind: [] for kind in KIND_LABELS}
    for info in infos:
        groups.setdefault(kind_of(info.name), []).append(info.name)
    if default not in {info.name for info in infos} and kind_of(default) != "pretrained":
        # A built-in model the list does not know yet (e.g. its package is still missing).
        groups[kind_of(default)].insert(0, default)
    return {kind: names for kind, names in groups.items() if names}


def _init_state(groups: dict[str, list[str]], default: str) -> None:
    """Seed the widgets from the default model, once per session."""
    if KEY_KIND in st.session_state:
        return
    kind = kind_of(default)
    if kind in groups and default in groups[kind]:
        st.session_state[KEY_KIND] = kind
        st.session_state[key_builtin(kind)] = default
        st.session_state[KEY_CUSTOM] = ""
    else:
        # A folder, .gguf file or hub name: it goes in the text field.
        st.session_state[KEY_KIND] = next(iter(groups))
        st.session_state[KEY_CUSTOM] = default
    st.session_state[KEY_BACKEND] = DEFAULT_BACKEND


def model_picker() -> ModelChoice:
    """Draw the model picker in the sidebar and return the choice.

    Returns:
        The spec and backend to load. A non-empty text field wins over the built-in list.
    """
    default = default_model()
    infos = builtin_models()
    groups = _grouped(infos, default)
    _init_state(groups, default)
    descriptions = {info.name: info.description for info in infos}

    sidebar = st.sidebar
    sidebar.subheader("Model")
    kinds = list(groups)
    if st.session_state.get(KEY_KIND) not in kinds:
        st.session_state[KEY_KIND] = kinds[0]
    kind = sidebar.segmented_control(
        "Kind", kinds, required=True, format_func=lambda k: KIND_LABELS.get(k, k), key=KEY_KIND
    )
    kind = kind or kinds[0]
    names = groups[kind]
    if st.session_state.get(key_builtin(kind)) not in names:
        st.session_state[key_builtin(kind)] = names[0]
    builtin = sidebar.selectbox(
        "Built-in model",
        names,
        key=key_builtin(kind),
        help="Task models are trained in-repo (on first use if no checkpoint is cached); "
        "RASP models are compiled programs; pretrained models load offline.",
    )
    if descriptions.get(builtin):
        sidebar.caption(descriptions[builtin])
    custom = sidebar.text_input(
        "Or load a path or hub name",
        key=KEY_CUSTOM,
        placeholder="/path/to/hf-folder, model.gguf, org/name",
        help="A local Hugging Face folder, a .gguf file, a hub name (hf:org/name) or any "
        "model string such as task:reverse. Clear it to use the built-in model above.",
    ).strip()
    spec = custom or builtin
    backend = DEFAULT_BACKEND
    if ModelChoice(spec).is_pretrained:
        backend = sidebar.radio(
            "Backend",
            BACKENDS,
            key=KEY_BACKEND,
            horizontal=True,
            help="bridge: TransformerBridge over the Hugging Face model; "
            "hooked: a converted HookedTransformer.",
        )
    return ModelChoice(spec, backend)


@st.cache_resource(show_spinner=False, max_entries=4)
def _load_cached(spec: str, backend: str) -> LoadedModel:
    # Errors are not cached by Streamlit: a failed load is retried on the next run.
    return load_model(spec, backend=backend)  # type: ignore[arg-type]


def load_choice(choice: ModelChoice) -> LoadedModel:
    """Load (or fetch from the cache) the chosen model, with a spinner.

    Raises:
        ModelError: for an unknown model, a bad checkpoint or an unsupported architecture.
    """
    backend = choice.backend if choice.is_pretrained else DEFAULT_BACKEND
    hint = (
        " (a task model trains on first use: up to a minute)"
        if kind_of(choice.spec) == "task"
        else ""
    )
    with st.spinner(f"Loading {choice.label}{hint}…"):
        return _load_cached(choice.spec, backend)
