"""Errors raised by probe suites, report configs, the result store and the runner.

Every message says what was wrong, the offending value, and what is valid.
"""

from __future__ import annotations


class ProbeError(Exception):
    """Base class of every error the probes layer raises on bad input."""


class ConfigError(ProbeError):
    """A report config with one or more problems; ``problems`` lists every one of them.

    Example:
        >>> str(ConfigError("x.toml", ["unknown suite 'foo'", "bad model"]))
        "x.toml has 2 problems:\\n  - unknown suite 'foo'\\n  - bad model"
    """

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source} has {len(self.problems)} {noun}:\n{lines}")


class UnknownSuiteError(ProbeError):
    """A suite name that is not registered (the message lists the registered ones)."""


class SuiteNotApplicable(ProbeError):
    """A suite that cannot measure this model (e.g. RASP recovery on a pretrained LM): the cell
    is recorded as skipped with this message, not as failed."""


class StoreError(ProbeError):
    """A result store folder, cell or run that is missing, unreadable or corrupt."""


class BackendError(ProbeError):
    """An execution backend that cannot be used: unknown name, Dask missing, scheduler unreachable."""
