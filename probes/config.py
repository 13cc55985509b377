"""Report configs: a TOML file listing models x suites x options, validated before any work.

```toml
title = "Heads and probes on small models"   # optional; the report's heading
models = ["task:induction", "rasp:reverse", "smollm2-135m"]
device = "cpu"                                # optional: "cpu" (default) or "cuda"

[[suite]]
name = "head_scores"                          # a registered suite (mechscope report suites)

[[suite]]
name = "linear_probe"
label = "arithmetic"                          # optional: tells apart two entries of one suite
models = ["smollm2-135m"]                     # optional: replaces the top-level list
options = { property = "arithmetic_truth", n_examples = 96 }
```

Every (model, suite entry) pair is one cell. A suite that cannot measure a model kind (RASP
recovery on a pretrained LM) is skipped for that model, unless the entry names the model
itself, which is an error. Validation collects *every* problem (unknown keys, models, suites,
options, bad values, repeated labels) and raises one ``ConfigError`` listing them all.

Example:
    >>> config = load_config("probes/configs/example.toml")        # doctest: +SKIP
    >>> len(config.cells())                                          # doctest: +SKIP
    10
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from models import ModelSpec, UnknownModelError, list_models
from probes.errors import ConfigError, UnknownSuiteError
from probes.suite import build_options, get_suite, kind_of_spec

TOP_LEVEL_KEYS = ("title", "name", "models", "device", "suite")
ENTRY_KEYS = ("name", "label", "models", "options")
DEVICES = ("cpu", "cuda")

#: Shipped example configs (package data).
CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class SuiteEntry:
    """One ``[[suite]]`` entry: a suite, its options and the models it runs on."""

    label: str
    suite: str
    options: Any
    models: tuple[str, ...]


@dataclass(frozen=True)
class CellSpec:
    """One cell to compute: a model, a suite entry, its options, or why it is skipped."""

    model: str
    label: str
    suite: str
    options: Any
    skip_reason: str | None = None


@dataclass(frozen=True)
class ReportConfig:
    """A validated report config.

    Attributes:
        name: what ties reruns together for the diff (the ``name`` key, else the file stem).
        title: the report heading.
        models: every model string, in order of first appearance.
        entries: the suite entries.
        device: ``cpu`` or ``cuda`` (``cuda`` cells ask Dask workers for a ``GPU`` resource).
        source: the file it was read from (or ``<string>``).
        text: the TOML text, kept verbatim for the report's provenance.
    """

    name: str
    title: str
    models: tuple[str, ...]
    entries: tuple[SuiteEntry, ...]
    device: Literal["cpu", "cuda"]
    source: str
    text: str

    def cells(self) -> list[CellSpec]:
        """Every (model, entry) cell, model by model, in config order."""
        out = []
        for model in self.models:
            for entry in self.entries:
                if model not in entry.models:
                    continue
                suite = get_suite(entry.suite)
                kind = kind_of_spec(ModelSpec.parse(model).kind)
                reason = None
                if suite.applies_to is not None and kind not in suite.applies_to:
                    reason = f"{suite.name} measures {', '.join(suite.applies_to)} models only"
                out.append(CellSpec(model, entry.label, entry.suite, entry.options, reason))
        return out


def _check_model(text: Any, where: str, known: set[str]) -> str | None:
    """A problem with one model string, or ``None``."""
    if not isinstance(text, str):
        return f"{where}: model {text!r} is not a string"
    try:
        spec = ModelSpec.parse(text)
    except UnknownModelError as exc:
        return f"{where}: {exc}"
    if spec.kind in ("task", "rasp", "program") and spec.text not in known:
        valid = ", ".join(sorted(n for n in known if n.startswith(f"{spec.kind}:")))
        return f"{where}: unknown model {text!r}; valid {spec.kind} models: {valid}"
    return None


def parse_config(text: str, source: str = "<string>", name: str | None = None) -> ReportConfig:
    """Parse and validate a config given as TOML text.

    Raises:
        ConfigError: listing every problem found (invalid TOML is one problem).
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from exc
    problems: list[str] = []
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            problems.append(f"unknown key {key!r}; valid: {', '.join(TOP_LEVEL_KEYS)}")
    known = {info.name for info in list_models()}
    models = raw.get("models", [])
    if not isinstance(models, list) or not models:
        problems.append("'models' must be a non-empty list of model names, e.g. ['task:sort']")
        models = []
    for model in models:
        problem = _check_model(model, "models", known)
        if problem:
            problems.append(problem)
    device = raw.get("device", "cpu")
    if device not in DEVICES:
        problems.append(f"device {device!r} is not valid; valid: {', '.join(DEVICES)}")
    for key in ("title", "name"):
        if key in raw and not isinstance(raw[key], str):
            problems.append(f"{key!r} must be a string, got {raw[key]!r}")
    entries_raw = raw.get("suite", [])
    if not isinstance(entries_raw, list) or not entries_raw:
        problems.append("no suites: add at least one [[suite]] table with a name")
        entries_raw = []
    entries: list[SuiteEntry] = []
    labels: set[str] = set()
    top_models = tuple(m for m in models if isinstance(m, str))
    all_models = list(top_models)
    for i, entry in enumerate(entries_raw, start=1):
        where = f"suite {i}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a [[suite]] table")
            continue
        for key in entry:
            if key not in ENTRY_KEYS:
                problems.append(f"{where}: unknown key {key!r}; valid: {', '.join(ENTRY_KEYS)}")
        suite_name = entry.get("name")
        if not isinstance(suite_name, str):
            problems.append(f'{where}: needs a name, e.g. name = "head_scores"')
            continue
        where = f"suite {i} ({suite_name})"
        try:
            suite = get_suite(suite_name)
        except UnknownSuiteError as exc:
            problems.append(f"{where}: {exc}")
            continue
        label = entry.get("label", suite_name)
        if not isinstance(label, str) or not label:
            problems.append(f"{where}: label must be a non-empty string, got {label!r}")
            label = suite_name
        if label in labels:
            problems.append(
                f"{where}: label {label!r} is used twice; give each entry of one suite its "
                'own label = "..."'
            )
        labels.add(label)
        raw_options = entry.get("options", {})
        if not isinstance(raw_options, dict):
            problems.append(f"{where}: options must be a table, got {raw_options!r}")
            raw_options = {}
        options, option_problems = build_options(suite, raw_options, where)
        problems += option_problems
        entry_models = entry.get("models")
        if entry_models is None:
            chosen = top_models
        elif not isinstance(entry_models, list) or not entry_models:
            problems.append(f"{where}: models must be a non-empty list of model names")
            chosen = ()
        else:
            chosen = tuple(m for m in entry_models if isinstance(m, str))
            for model in entry_models:
                problem = _check_model(model, where, known)
                if problem:
                    problems.append(problem)
                    continue
                kind = kind_of_spec(ModelSpec.parse(model).kind)
                if suite.applies_to is not None and kind not in suite.applies_to:
                    problems.append(
                        f"{where}: cannot measure {model!r} ({kind}); it measures "
                        f"{', '.join(suite.applies_to)} models only"
                    )
            all_models += [m for m in chosen if m not in all_models]
        entries.append(SuiteEntry(label, suite_name, options, chosen))
    if problems:
        raise ConfigError(source, problems)
    stem = Path(source).stem if source != "<string>" else "report"
    config_name = name or raw.get("name") or stem
    return ReportConfig(
        name=config_name,
        title=raw.get("title", config_name),
        models=tuple(dict.fromkeys(all_models)),
        entries=tuple(entries),
        device=device,
        source=source,
        text=text,
    )


def load_config(path: str | Path) -> ReportConfig:
    """Read and validate a TOML config file.

    Raises:
        ConfigError: a missing or unreadable file, or every problem in its content.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc}"]) from exc
    return parse_config(text, str(path))
