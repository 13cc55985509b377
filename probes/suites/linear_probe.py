"""Linear-probe suite: per-layer held-out accuracy of a logistic probe for a labelled property,
against a shuffled-label control.

Properties are labelled programmatically, offline, and registered in ``PROPERTIES``:

- ``arithmetic_truth`` (text models): ``"17 + 25 = 42."`` (true) against the same sum with a
  wrong result (off by 1..9, same number of digits where possible); half of the statements
  are true. Read at the final ``.``, after the whole statement.
- ``capital_truth`` (text models): ``"The capital of France is Paris."`` (true) against the
  same sentence naming another country's capital (false). The false capitals are the true
  list shifted by a seeded offset, so every city appears once in a true and once in a false
  statement: the city alone says nothing, only its fit with the country does (the "cities"
  design of Marks & Tegmark's Geometry of Truth). Read at the final ``.``.
- ``duplicate_token`` (task/RASP models): does the last token occur earlier in the input?
- ``sorted_input`` (task/RASP models): is the input already in non-decreasing order?
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

import numpy as np

from analysis.figures import linear_probe_figure
from analysis.linear_probes import LinearProbeOptions, run_linear_probes
from probes.errors import SuiteNotApplicable
from probes.hashing import fingerprint
from probes.suite import PreparedInputs, Progress, Suite, SuiteOutput, register_suite
from probes.suites.data import sample_inputs

PropertyName = Literal["arithmetic_truth", "capital_truth", "duplicate_token", "sorted_input"]


@dataclass(frozen=True)
class Property:
    """A labelled property: ``make(model, n, seed) -> (inputs, labels)``; ``text`` says whether
    it needs a text model (else a task-vocabulary model)."""

    name: str
    description: str
    text: bool
    make: Callable[[Any, int, int], tuple[list, list]]


def arithmetic_statements(n: int, seed: int) -> tuple[list[str], list[bool]]:
    """``n`` statements ``"a + b = c."`` with a, b in 10..49, alternately true and false.

    A wrong result differs from the true sum by 1..9 in either direction (kept positive), so
    its length and leading digit rarely give it away.

    Example:
        >>> arithmetic_statements(2, 0)[1]
        [True, False]
    """
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        a, b = (int(v) for v in rng.integers(10, 50, size=2))
        total = a + b
        truth = i % 2 == 0
        shown = total
        if not truth:
            offset = int(rng.integers(1, 10)) * (1 if rng.random() < 0.5 else -1)
            shown = total + offset if total + offset > 0 else total - offset
        texts.append(f"{a} + {b} = {shown}.")
        labels.append(truth)
    return texts, labels


def _arithmetic(model: Any, n: int, seed: int) -> tuple[list, list]:
    return arithmetic_statements(n, seed)


#: Country -> capital, written out here (common knowledge) for the ``capital_truth`` property.
CAPITALS: dict[str, str] = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Portugal": "Lisbon", "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow",
    "Egypt": "Cairo", "Greece": "Athens", "Austria": "Vienna", "Poland": "Warsaw",
    "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Ireland": "Dublin", "Hungary": "Budapest", "Thailand": "Bangkok", "Kenya": "Nairobi",
    "Peru": "Lima", "Argentina": "Buenos Aires", "Cuba": "Havana", "Canada": "Ottawa",
    "Australia": "Canberra", "India": "New Delhi", "Iran": "Tehran", "Iraq": "Baghdad",
    "Turkey": "Ankara", "Belgium": "Brussels", "Netherlands": "Amsterdam",
    "Switzerland": "Bern", "the Czech Republic": "Prague", "Romania": "Bucharest",
    "Ukraine": "Kyiv", "South Korea": "Seoul", "Vietnam": "Hanoi", "Indonesia": "Jakarta",
    "the Philippines": "Manila", "Chile": "Santiago", "Colombia": "Bogota",
    "Venezuela": "Caracas", "Nigeria": "Abuja", "Ethiopia": "Addis Ababa", "Morocco": "Rabat",
    "Saudi Arabia": "Riyadh", "Pakistan": "Islamabad", "Bangladesh": "Dhaka",
    "Nepal": "Kathmandu", "Iceland": "Reykjavik", "Scotland": "Edinburgh",
    "England": "London", "Wales": "Cardiff", "Brazil": "Brasilia", "Syria": "Damascus",
    "Lebanon": "Beirut", "Jordan": "Amman", "Afghanistan": "Kabul", "Mongolia": "Ulaanbaatar",
    "Qatar": "Doha",
}  # fmt: skip


def capital_statements(n: int, seed: int) -> tuple[list[str], list[bool]]:
    """Up to ``n`` statements "The capital of X is Y." (half true), at most two per country.

    Example:
        >>> capital_statements(2, 0)[0][0]
        'The capital of France is Paris.'
    """
    countries = list(CAPITALS)
    shift = int(np.random.default_rng(seed).integers(1, len(countries)))
    texts, labels = [], []
    for i, country in enumerate(countries[: max(1, n // 2)]):
        wrong = CAPITALS[countries[(i + shift) % len(countries)]]
        texts += [f"The capital of {country} is {CAPITALS[country]}.",
                  f"The capital of {country} is {wrong}."]  # fmt: skip
        labels += [True, False]
    return texts, labels


def _capitals(model: Any, n: int, seed: int) -> tuple[list, list]:
    return capital_statements(n, seed)


def _codec_property(fn: Callable[[list], bool]) -> Callable[[Any, int, int], tuple[list, list]]:
    def make(model: Any, n: int, seed: int) -> tuple[list, list]:
        seqs = [s for s in sample_inputs(model, 4 * n, seed) if len(s) >= 2]
        labels = [fn(s) for s in seqs]
        # Balance the classes where the sampler makes one rare: up to n // 2 of each.
        chosen: list[int] = []
        for value in (True, False):
            chosen += [i for i, v in enumerate(labels) if v is value][: n // 2]
        chosen.sort()
        return [seqs[i] for i in chosen], [labels[i] for i in chosen]

    return make


PROPERTIES: dict[str, Property] = {
    p.name: p
    for p in (
        Property("arithmetic_truth", "a + b = c. is true", True, _arithmetic),
        Property("capital_truth", "the capital of X is Y. is true", True, _capitals),
        Property(
            "duplicate_token",
            "the last token occurs earlier in the input",
            False,
            _codec_property(lambda s: s[-1] in s[:-1]),
        ),
        Property(
            "sorted_input",
            "the input is in non-decreasing order",
            False,
            _codec_property(lambda s: all(a <= b for a, b in pairwise(s))),
        ),
    )
}


@dataclass(frozen=True)
class LinearProbeSuiteOptions:
    """Attributes:
    property: the labelled property (``PROPERTIES``).
    n_examples: labelled inputs (about half of each class).
    position: token position read (negative: from each input's end).
    layers: blocks whose input residual is probed (default: all, plus the final residual).
    n_folds: stratified cross-validation folds.
    n_controls: shuffled-label repetitions.
    C: inverse L2 strength.
    seed: seed of the inputs, folds and shuffles.
    """

    property: PropertyName = "duplicate_token"
    n_examples: int = 128
    position: int = -1
    layers: tuple[int, ...] | None = None
    n_folds: int = 5
    n_controls: int = 3
    C: float = 1.0
    seed: int = 0

    def check(self) -> None:
        """Raise for a value out of range."""
        if self.n_examples < 2 * self.n_folds:
            raise ValueError(
                f"n_examples must be >= 2 * n_folds = {2 * self.n_folds}, got {self.n_examples}"
            )
        self.analysis_options().check()

    def analysis_options(self) -> LinearProbeOptions:
        """The backend's options."""
        return LinearProbeOptions(
            position=self.position,
            layers=self.layers,
            n_folds=self.n_folds,
            n_controls=self.n_controls,
            C=self.C,
            seed=self.seed,
        )


def prepare(model: Any, options: LinearProbeSuiteOptions) -> PreparedInputs:
    """The labelled inputs of the chosen property."""
    prop = PROPERTIES[options.property]
    is_text = model.codec is None
    if prop.text != is_text:
        need = "a text model" if prop.text else "a task or RASP model"
        valid = ", ".join(
            f"{p.name} ({'text' if p.text else 'task/RASP'})" for p in PROPERTIES.values()
        )
        raise SuiteNotApplicable(
            f"property {prop.name!r} needs {need}; {model.name!r} is {model.kind}. "
            f"Properties: {valid}"
        )
    inputs, labels = prop.make(model, options.n_examples, options.seed)
    n_true = sum(bool(v) for v in labels)
    return PreparedInputs(
        (inputs, labels),
        fingerprint([str(x) for x in inputs], [str(v) for v in labels]),
        f"{len(inputs)} inputs labelled '{prop.description}' ({n_true} true), e.g. {inputs[0]!r}",
    )


def measure(
    model: Any, value: Any, options: LinearProbeSuiteOptions, progress: Progress | None
) -> SuiteOutput:
    """Per-layer held-out accuracy, control and selectivity."""
    inputs, labels = value
    report = None if progress is None else (lambda done, total: progress("probe", done, total))
    result = run_linear_probes(
        model, inputs, labels, options=options.analysis_options(), progress=report
    )
    best, best_acc = result.best_layer()
    i = result.layer_labels.index(best)
    summary = {
        "property": options.property,
        "best_layer": best,
        "best_accuracy": round(best_acc, 4),
        "control_at_best": round(float(result.control_accuracy[i]), 4),
        "max_selectivity": round(float(result.selectivity.max()), 4),
        "embedding_accuracy": round(float(result.accuracy[0]), 4),
        "majority_baseline": round(result.majority_baseline, 4),
        "examples": result.n_examples,
    }
    title = (
        f"linear probe '{options.property}' · {result.model_name} · {result.n_examples} examples"
    )
    figure = linear_probe_figure(result, title)
    return SuiteOutput(summary, {"by_layer": result.to_frame()}, {"accuracy": figure})


register_suite(
    Suite(
        name="linear_probe",
        title="Linear probes",
        description=(
            "A logistic-regression probe per layer on the residual stream at one position, "
            "scored by stratified cross-validation, against the same probe on shuffled labels."
        ),
        options_type=LinearProbeSuiteOptions,
        prepare=prepare,
        measure=measure,
    )
)
