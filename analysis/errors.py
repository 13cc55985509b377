"""Errors raised by analysis backends. Messages name the bad value and what is valid."""

from __future__ import annotations


class AnalysisError(Exception):
    """Base class of every error an analysis backend raises on bad input."""


class HookNotFoundError(AnalysisError):
    """A hook name the model does not have."""


class OptionError(AnalysisError):
    """An option out of range: a layer or head that does not exist, a bad target, k < 1."""
