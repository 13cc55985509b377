"""``mechscope report ...``: run a batch probe config, list stored runs, open a report.

Only ``argparse`` is imported at module level, so ``mechscope --help`` stays instant; the
probes package (and torch) load when a report command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_report_parser(sub: Any) -> None:
    """Add the ``report`` command group to the ``mechscope`` subparsers."""
    report = sub.add_parser(
        "report",
        help="batch probe reports: run a config, list and open stored runs",
        description="Batch probe reports: models x suites x options from a TOML config.",
    )
    actions = report.add_subparsers(dest="action", required=True)
    run = actions.add_parser(
        "run", help="compute every (model, suite) cell of a TOML config and write its report"
    )
    run.add_argument("config", help="a TOML config, e.g. probes/configs/example.toml")
    _out(run)
    run.add_argument("--backend", choices=("local", "dask"), default="local",
                     help="local: in this process (default); dask: on a Dask cluster")  # fmt: skip
    run.add_argument("--scheduler", default=None,
                     help="Dask scheduler address for --backend dask, e.g. tcp://127.0.0.1:8786")  # fmt: skip
    run.add_argument("--diff-against", default=None, metavar="RUN",
                     help="run id to compare with (default: the previous run of the same config)")  # fmt: skip
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    check = actions.add_parser("check", help="validate a config (every problem) without running")
    check.add_argument("config")
    listing = actions.add_parser("list", help="list stored runs, newest first")
    _out(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    opening = actions.add_parser("open", help="open a run's HTML report in the browser")
    opening.add_argument("run", nargs="?", default=None, help="run id (default: the latest)")
    _out(opening)
    opening.add_argument("--print", action="store_true", help="only print the report's path")
    actions.add_parser("suites", help="list the probe suites and their options")


def _out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="report store folder (default: $MECHSCOPE_CACHE/reports)")  # fmt: skip


def run_report_command(args: argparse.Namespace) -> int:
    """Run one ``mechscope report`` action; returns the exit code (2 on bad input)."""
    from analysis.errors import AnalysisError
    from models import ModelError
    from probes import ProbeError

    try:
        return _dispatch(args)
    except (ProbeError, ModelError, AnalysisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from probes import ResultStore, load_config

    if args.action == "suites":
        return _print_suites()
    if args.action == "check":
        config = load_config(args.config)
        cells = config.cells()
        skipped = sum(1 for c in cells if c.skip_reason)
        print(f"{args.config}: valid; {len(config.models)} models, {len(config.entries)} suites, "
              f"{len(cells)} cells ({skipped} skipped)")  # fmt: skip
        return 0
    store = ResultStore(args.out)
    if args.action == "run":
        from probes import run_report

        config = load_config(args.config)
        record = run_report(
            config,
            store,
            backend=args.backend,
            scheduler=args.scheduler,
            show_progress=not args.no_progress,
            diff_against=args.diff_against,
        )
        counts = record["counts"]
        print(json.dumps({"run_id": record["run_id"], "report": record["report"],
                          "seconds": record["seconds"], **counts, "diff": record["diff"]},
                         indent=2))  # fmt: skip
        for cell in record["cells"]:
            if cell["status"] == "failed":
                print(
                    f"failed: {cell['model']} · {cell['label']}: {cell['error']}", file=sys.stderr
                )
        return 1 if counts["failed"] else 0
    runs = store.list_runs()
    if args.action == "list":
        if args.json:
            keys = ("run_id", "status", "started", "seconds", "counts", "backend")
            print(json.dumps([{k: r.get(k) for k in keys} | {"config": r["config"]["name"]}
                              for r in runs], indent=2))  # fmt: skip
            return 0
        if not runs:
            print(f"no runs in {store.root}")
        for r in runs:
            counts = r.get("counts") or {}
            done = " ".join(f"{k} {v}" for k, v in counts.items())
            print(f"{r['run_id']:44s} {r['status']:11s} {r['config']['name']:20s} {done}")
        return 0
    run_id = args.run or (runs[0]["run_id"] if runs else None)
    if run_id is None:
        print(f"error: no runs in {store.root}", file=sys.stderr)
        return 2
    path = store.run_dir(run_id) / "report.html"
    store.load_run(run_id)  # an unknown id raises, listing the latest
    if not path.is_file():
        print(f"error: run {run_id} has no report (interrupted?)", file=sys.stderr)
        return 2
    print(path)
    if not args.print:
        import webbrowser

        webbrowser.open(path.as_uri())
    return 0


def _print_suites() -> int:
    from dataclasses import fields

    from probes import list_suites

    for suite in list_suites():
        kinds = ", ".join(suite.applies_to) if suite.applies_to else "all models"
        print(f"{suite.name} ({kinds}): {suite.description}")
        for f in fields(suite.options_type):
            print(f"    {f.name} = {f.default!r}")
    return 0
