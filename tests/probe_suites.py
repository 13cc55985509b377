"""Suites registered only by the probe tests: one that counts its calls, one that sleeps (for
the kill test), and one that raises on one model (failed-cell recording)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from probes.hashing import fingerprint
from probes.suite import PreparedInputs, Suite, SuiteOutput, register_suite

#: ``measure`` calls per suite name in this process.
CALLS: dict[str, int] = {}


@dataclass(frozen=True)
class ToyOptions:
    """Attributes:
    value: a number the measurement doubles.
    seconds: how long the measurement sleeps.
    fail_on: a model name on which the measurement raises.
    """

    value: int = 1
    seconds: float = 0.0
    fail_on: str = ""

    def check(self) -> None:
        if self.seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {self.seconds}")


def _prepare(model: Any, options: ToyOptions) -> PreparedInputs:
    tokens = model.to_tokens([1, 2, 3])
    return PreparedInputs(tokens, fingerprint(tokens, options.value), "the tokens of [1, 2, 3]")


def _measure(name: str):
    def measure(model: Any, tokens: Any, options: ToyOptions, progress: Any) -> SuiteOutput:
        CALLS[name] = CALLS.get(name, 0) + 1
        if options.fail_on and model.name == options.fail_on:
            raise RuntimeError(f"planted failure on {model.name}")
        time.sleep(options.seconds)
        logits = model(tokens)
        table = pd.DataFrame({"position": range(logits.shape[1]),
                              "top": logits[0].argmax(-1).tolist()})  # fmt: skip
        fig = go.Figure(go.Bar(x=table["position"], y=table["top"]))
        summary = {"double": 2 * options.value, "n_layers": model.cfg.n_layers,
                   "logit_sum": round(float(logits.sum()), 3)}  # fmt: skip
        if name == "sleepy":  # the kill test checks a local run never imports Dask
            summary["dask_imported"] = "distributed" in sys.modules
        return SuiteOutput(summary, {"top": table}, {"top": fig})

    return measure


for _name in ("toy", "sleepy"):
    register_suite(
        Suite(
            name=_name,
            title=f"Toy suite {_name}",
            description="a test suite: runs the model once on [1, 2, 3]",
            options_type=ToyOptions,
            prepare=_prepare,
            measure=_measure(_name),
        )
    )
