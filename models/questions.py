"""A small factual question set with known answers, shipped as package data.

``models/data/questions/factual_qa.json`` was written for mechscope from common general
knowledge: country capitals, chemical symbols, authors of well-known books and basic science /
history facts, each answer checked by hand against standard references (its ``source`` field
says so; license CC0). It labels a model's greedy answers right or wrong for the hallucination
predictor (``analysis.hallucination``).

Example:
    >>> qs = load_questions()
    >>> qs[0].question, qs[0].answers
    ('What is the capital of France?', ('Paris',))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from models.errors import CheckpointError, UnknownModelError

#: Shipped question sets: name -> JSON file.
QUESTION_SETS: dict[str, Path] = {
    "factual": Path(__file__).parent / "data" / "questions" / "factual_qa.json"
}


@dataclass(frozen=True)
class Question:
    """One question.

    Attributes:
        question: the question text.
        answers: accepted answers (any one counts).
        category: ``capital``, ``element``, ``author`` or ``general``.
        match: ``substring`` (case-insensitive, anywhere in the answer) or ``word`` (the answer
            as a whole word, case-sensitive: chemical symbols such as ``C`` or ``K``).
    """

    question: str
    answers: tuple[str, ...]
    category: str = "general"
    match: str = "substring"


def load_questions(name: str = "factual") -> list[Question]:
    """The questions of a shipped set, in file order.

    Raises:
        UnknownModelError: an unknown set name (the message lists the valid ones).
        CheckpointError: a missing or malformed file (names the file and the field).
    """
    if name not in QUESTION_SETS:
        raise UnknownModelError(f"unknown question set {name!r}; valid: {', '.join(QUESTION_SETS)}")
    path = QUESTION_SETS[name]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        items = data["items"]
        out = [Question(str(i["question"]), tuple(str(a) for a in i["answers"]),
                        str(i.get("category", "general")), str(i.get("match", "substring")))
               for i in items]  # fmt: skip
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable JSON question set ({exc})") from exc
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: field {exc} is missing or malformed") from exc
    if not out or any(not q.answers for q in out):
        raise CheckpointError(f"{path}: field 'items' is empty or has a question without answers")
    return out


def question_set_source(name: str = "factual") -> str:
    """The ``source`` statement of a shipped set."""
    if name not in QUESTION_SETS:
        raise UnknownModelError(f"unknown question set {name!r}; valid: {', '.join(QUESTION_SETS)}")
    return str(json.loads(QUESTION_SETS[name].read_text(encoding="utf-8")).get("source", ""))
