"""Batch probe reports: suites of measurements over many models, a content-addressed result
store, self-contained HTML reports, and scale-out on Dask.

Example:
    >>> from probes import ResultStore, load_config, run_report
    >>> record = run_report(load_config("probes/configs/example.toml"), ResultStore("out"))  # doctest: +SKIP
    >>> record["report"]                                                                       # doctest: +SKIP
    'out/runs/20260101-120000-000-example/report.html'
"""

from probes.config import CONFIG_DIR, CellSpec, ReportConfig, load_config, parse_config
from probes.errors import (
    BackendError,
    ConfigError,
    ProbeError,
    StoreError,
    SuiteNotApplicable,
    UnknownSuiteError,
)
from probes.runner import ReportRun, run_report
from probes.store import ResultStore, StoredCell
from probes.suite import PreparedInputs, Suite, SuiteOutput, get_suite, list_suites, register_suite

__all__ = [
    "CONFIG_DIR",
    "BackendError",
    "CellSpec",
    "ConfigError",
    "PreparedInputs",
    "ProbeError",
    "ReportConfig",
    "ReportRun",
    "ResultStore",
    "StoreError",
    "StoredCell",
    "Suite",
    "SuiteNotApplicable",
    "SuiteOutput",
    "UnknownSuiteError",
    "get_suite",
    "list_suites",
    "load_config",
    "parse_config",
    "register_suite",
    "run_report",
]
