"""Probe suites: a named set of inputs plus a measurement built on the analysis backends.

A ``Suite`` has an options dataclass, ``prepare(model, options) -> PreparedInputs`` (the exact
inputs, deterministic from the options' seed, with a content fingerprint) and
``measure(model, inputs, options, progress) -> SuiteOutput`` (headline numbers, tables and
figures). Suites register themselves by name with ``register_suite``; the built-in ones live
in ``probes.suites`` and are imported on first use.

Example:
    >>> get_suite("head_scores").title        # doctest: +SKIP
    'Head scores'
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import pandas as pd

from analysis.errors import AnalysisError
from models.errors import ModelError
from probes.errors import ProbeError, UnknownSuiteError

#: Modules holding the built-in suites; importing one registers its suites. An SAE
#: concept-count suite is added by writing ``probes/suites/sae_concepts.py`` on top of
#: ``analysis.sae`` (a ``Suite`` registered with ``register_suite``) and listing it here.
SUITE_MODULES: tuple[str, ...] = (
    "probes.suites.heads",
    "probes.suites.lens",
    "probes.suites.gating",
    "probes.suites.linear_probe",
)

#: ``progress(stage, done, total)``: what a suite reports while it measures.
Progress = Callable[[str, int, int], None]

Scalar = float | int | str | bool | None


@dataclass(frozen=True)
class PreparedInputs:
    """The inputs of one cell.

    Attributes:
        value: what ``measure`` takes (token tensors, a ``GatingData``, prompts and labels...).
        fingerprint: SHA-256 of the inputs' content (``probes.hashing.fingerprint``).
        description: one line for the report ("64 random task inputs, lengths 1..8").
    """

    value: Any
    fingerprint: str
    description: str


@dataclass(frozen=True)
class SuiteOutput:
    """What a measurement returns for one cell.

    Attributes:
        summary: headline numbers (and short strings) shown in the summary table and diffed
            between reports.
        tables: named long frames, stored as Parquet and written as CSV/JSON.
        figures: named plotly figures, stored as plotly JSON and embedded in the report.
        notes: warnings to read before trusting the numbers.
    """

    summary: dict[str, Scalar]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Suite:
    """A probe suite.

    Attributes:
        name: registry key, used in configs.
        title: heading of its report section.
        description: what it measures, one or two sentences for the report.
        options_type: a frozen dataclass of options (every field with a default); an optional
            ``check()`` method raises on values out of range.
        prepare: ``(model, options) -> PreparedInputs``; raises ``SuiteNotApplicable`` for a
            model it cannot measure.
        measure: ``(model, prepared value, options, progress) -> SuiteOutput``.
        version: bump when the measurement changes, so stored results are not reused.
        applies_to: which model kinds (``task``, ``rasp``, ``pretrained``) it can measure, or
            ``None`` for all; decided from the model string, before loading anything.
    """

    name: str
    title: str
    description: str
    options_type: type
    prepare: Callable[[Any, Any], PreparedInputs]
    measure: Callable[[Any, Any, Any, Progress | None], SuiteOutput]
    version: int = 1
    applies_to: tuple[str, ...] | None = None


_REGISTRY: dict[str, Suite] = {}
_LOADED = False


def register_suite(suite: Suite) -> Suite:
    """Add a suite to the registry (a later registration of the same name replaces it)."""
    _REGISTRY[suite.name] = suite
    return suite


def _load_builtin() -> None:
    global _LOADED
    if not _LOADED:
        for module in SUITE_MODULES:
            importlib.import_module(module)
        _LOADED = True


def list_suites() -> list[Suite]:
    """Every registered suite, by name."""
    _load_builtin()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_suite(name: str) -> Suite:
    """The suite registered as ``name``.

    Raises:
        UnknownSuiteError: for an unregistered name (the message lists the registered ones).
    """
    _load_builtin()
    if name not in _REGISTRY:
        raise UnknownSuiteError(f"unknown suite {name!r}; valid: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def kind_of_spec(kind: str) -> str:
    """The ``LoadedModel.kind`` a ``ModelSpec.kind`` loads as (``builtin``/``folder``/... are
    ``pretrained``)."""
    return kind if kind in ("task", "rasp", "program") else "pretrained"


# -- options ----------------------------------------------------------------------------------
def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(get_args(tp)[0])}"
    if tp is type(None):
        return "unset (leave it out)"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """``(ok, value)``: ``value`` read as type ``tp`` (TOML gives int, float, bool, str, list)."""
    origin = get_origin(tp)
    if origin is Literal:
        return (value in get_args(tp) and type(value) in {type(a) for a in get_args(tp)}), value
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            ok, out = _coerce(value, arg)
            if ok:
                return True, out
        return False, value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        item = get_args(tp)[0]
        out = []
        for v in value:
            ok, c = _coerce(v, item)
            if not ok:
                return False, value
            out.append(c)
        return True, tuple(out)
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    return False, value


def build_options(suite: Suite, raw: dict[str, Any], where: str) -> tuple[Any, list[str]]:
    """The suite's options from a config table, and every problem found.

    Unknown names, values of the wrong type and values the options' ``check()`` rejects are
    all reported (as strings starting with ``where``); the options are ``None`` when any is.
    """
    problems: list[str] = []
    cls = suite.options_type
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            problems.append(
                f"{where}: unknown option {key!r} for suite {suite.name!r}; "
                f"valid: {', '.join(sorted(known))}"
            )
            continue
        ok, coerced = _coerce(value, hints[key])
        if not ok:
            problems.append(
                f"{where}: option {key} = {value!r} is not valid; expected {_describe(hints[key])}"
            )
            continue
        values[key] = coerced
    missing = [
        f.name
        for f in fields(cls)
        if f.default is MISSING and f.default_factory is MISSING and f.name not in values
    ]
    for name in missing:
        problems.append(f"{where}: option {name!r} of suite {suite.name!r} is required")
    if problems:
        return None, problems
    options = cls(**values)
    check = getattr(options, "check", None)
    if check is not None:
        try:
            check()
        except (ProbeError, AnalysisError, ModelError, ValueError) as exc:
            return None, [f"{where}: {exc}"]
    return options, []
