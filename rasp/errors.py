"""Errors raised by ``rasp``. Every message names the offending expression or value and what is valid."""

from __future__ import annotations


class RaspError(Exception):
    """Base class of every error the ``rasp`` package raises on bad input."""


class RaspTypeError(RaspError, TypeError):
    """An expression is built from the wrong kinds of parts or mixes encodings.

    Example: a numerical ``Aggregate`` of a categorical s-op.
    """


class EvaluationError(RaspError):
    """The interpreter cannot evaluate an expression on a given input.

    Example: a categorical ``Aggregate`` whose selector picks two keys for one query.
    """


class CompileError(RaspError):
    """Compilation was given invalid settings (vocabulary, length, names)."""


class UnsupportedProgramError(CompileError):
    """The program uses expressions the compiler cannot turn into weights.

    Attributes:
        problems: ``(expression label, reason)`` for every offending expression.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {label}: {reason}" for label, reason in self.problems)
        super().__init__(
            f"cannot compile the program; {len(self.problems)} unsupported expression(s):\n{lines}"
        )


class RaspParseError(RaspError):
    """A program typed as text uses syntax or a construct outside the allowed subset.

    Attributes:
        line: 1-based line of the offending construct (``None`` when not known).
        column: 1-based column of it (``None`` when not known).
        construct: what was found (``"attribute access '.__class__'"``, ``"import statement"``).
    """

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
        construct: str | None = None,
    ) -> None:
        self.line, self.column, self.construct = line, column, construct
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(where + message)


class ProgramError(RaspError):
    """Base class of the errors of Transformer Programs (``rasp.programs``)."""


class ProgramConfigError(ProgramError, ValueError):
    """A Transformer Program architecture or fit setting is invalid (names the field and what is valid)."""


class ProgramDataError(ProgramError, ValueError):
    """A task handed to ``fit_program`` cannot be turned into training data."""
