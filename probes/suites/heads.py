"""Head scores suite: previous-token, duplicate-token, induction and sink score of every head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analysis.figures import head_scores_figure
from analysis.head_scores import HeadScoreOptions, repeated_random_tokens, run_head_scores
from probes.hashing import fingerprint
from probes.suite import PreparedInputs, Progress, Suite, SuiteOutput, register_suite


@dataclass(frozen=True)
class HeadScoresSuiteOptions:
    """Attributes:
    n_sequences: random sequences ``[BOS, x, x]`` in the batch.
    half_length: length of each random half (default: as the context allows, <= 32).
    seed: seed of the random tokens.
    """

    n_sequences: int = 8
    half_length: int | None = None
    seed: int = 0

    def check(self) -> None:
        """Raise ``ValueError`` for a value out of range."""
        if self.n_sequences < 1:
            raise ValueError(f"n_sequences must be >= 1, got {self.n_sequences}")
        if self.half_length is not None and self.half_length < 1:
            raise ValueError(f"half_length must be >= 1, got {self.half_length}")

    def analysis_options(self) -> HeadScoreOptions:
        """The backend's options."""
        return HeadScoreOptions(self.n_sequences, self.half_length, self.seed)


def prepare(model: Any, options: HeadScoresSuiteOptions) -> PreparedInputs:
    """The repeated random token batch the scores are read from."""
    tokens, half = repeated_random_tokens(model, options.analysis_options())
    return PreparedInputs(
        None,
        fingerprint(tokens),
        f"{tokens.shape[0]} random sequences [BOS, x, x] with halves of {half} tokens",
    )


def measure(
    model: Any, _: Any, options: HeadScoresSuiteOptions, progress: Progress | None
) -> SuiteOutput:
    """Scores of every head, the top heads, and a heatmap per score."""
    result = run_head_scores(model, options.analysis_options())
    summary: dict[str, Any] = {}
    for score in ("induction", "previous_token", "duplicate_token"):
        label, value = result.top(score, 1)[0]
        summary[f"top_{score}_head"] = label
        summary[f"top_{score}"] = round(value, 4)
    summary["mean_sink"] = round(float(result.scores["sink"].mean()), 4)
    figures = {s: head_scores_figure(result, s) for s in ("induction", "previous_token", "sink")}
    return SuiteOutput(summary, {"scores": result.to_frame()}, figures)


register_suite(
    Suite(
        name="head_scores",
        title="Head scores",
        description=(
            "Mean attention of every head on repeated random sequences [BOS, x, x]: to the "
            "previous token, to the earlier copy of the current token (duplicate), to the token "
            "after that copy (induction), and to BOS (sink)."
        ),
        options_type=HeadScoresSuiteOptions,
        prepare=prepare,
        measure=measure,
    )
)
