"""``mechscope`` command line: list and train models, start the dashboard.

Heavy libraries (torch, TransformerLens) are imported only by the commands that need them, so
``mechscope --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_APP_MODEL = "task:sort"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``mechscope`` command."""
    parser = argparse.ArgumentParser(
        prog="mechscope",
        description="mechscope: a workbench for mechanistic interpretability of transformers.",
        epilog=(
            "examples:\n"
            "  mechscope models list                 every built-in model\n"
            "  mechscope models train sort           train (or retrain) the task:sort model\n"
            "  mechscope models predict task:sort 3 1 2\n"
            "  mechscope app --model smollm2-135m    open the dashboard on SmolLM2-135M\n"
            "  mechscope report run probes/configs/example.toml   a batch probe report\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list, train and try models")
    models_sub = models.add_subparsers(dest="action", required=True)
    listing = models_sub.add_parser("list", help="list built-in models")
    listing.add_argument("--json", action="store_true", help="print JSON")
    train = models_sub.add_parser("train", help="train a task model and cache its checkpoint")
    train.add_argument("task", help="task name, e.g. sort (see `mechscope models list`)")
    train.add_argument("--steps", type=int, default=None, help="override the default step count")
    train.add_argument("--seed", type=int, default=None, help="override the default seed")
    predict = models_sub.add_parser("predict", help="run a task-vocabulary model on one input")
    predict.add_argument("model", help="e.g. task:sort or rasp:reverse")
    predict.add_argument("tokens", nargs="+", help="input tokens, space separated")
    generate = models_sub.add_parser("generate", help="greedy completion with a pretrained model")
    generate.add_argument("model", help="e.g. smollm2-135m or a local Hugging Face folder")
    generate.add_argument("prompt")
    generate.add_argument("--max-new-tokens", type=int, default=16)

    app = sub.add_parser("app", help="start the Streamlit dashboard (bound to 127.0.0.1)")
    app.add_argument(
        "--model", default=DEFAULT_APP_MODEL, help=f"model to open (default {DEFAULT_APP_MODEL})"
    )
    app.add_argument("--port", type=int, default=8501)
    app.add_argument("--address", default="127.0.0.1", help="bind address (default localhost only)")
    app.add_argument("--reports", default=None, metavar="DIR",
                     help="report store the Reports page lists (default: $MECHSCOPE_CACHE/reports)")  # fmt: skip

    from app.report_cli import add_report_parser

    add_report_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "app":
        return _run_app(args)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command == "report":
        from app.report_cli import run_report_command

        return run_report_command(args)
    from models import ModelError

    try:
        return _run_models(args)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run_models(args: argparse.Namespace) -> int:
    from models import list_models, load_model

    if args.action == "list":
        infos = list_models()
        if args.json:
            print(json.dumps([info.__dict__ for info in infos], indent=2))
        else:
            for info in infos:
                print(f"{info.name:24s} {info.kind:11s} {info.description}")
        return 0
    if args.action == "train":
        from models.loader import task_checkpoint_dir, train_and_save_task
        from models.tasks import get_task

        task = get_task(args.task)
        overrides = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
        folder = train_and_save_task(task.name, task_checkpoint_dir(task.name), **overrides)
        meta = json.loads((folder / "config.json").read_text())
        print(json.dumps({"checkpoint": str(folder), "metrics": meta["metrics"],
                          "seconds": meta["training"]["seconds"]}, indent=2))  # fmt: skip
        return 0
    if args.action == "predict":
        model = load_model(args.model)
        values = [model.codec.parse_value(t) for t in args.tokens] if model.codec else args.tokens
        print(" ".join(map(str, model.predict(values))))
        return 0
    model = load_model(args.model)
    print(model.generate(args.prompt, args.max_new_tokens))
    return 0


def _run_app(args: argparse.Namespace) -> int:
    script = Path(__file__).with_name("main.py")
    env = dict(os.environ, MECHSCOPE_DEFAULT_MODEL=args.model)
    if args.threads:
        env["MECHSCOPE_THREADS"] = str(args.threads)
    if args.reports:
        env["MECHSCOPE_REPORTS"] = str(Path(args.reports).expanduser().resolve())
    command = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.address", args.address, "--server.port", str(args.port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    print(f"mechscope dashboard on http://{args.address}:{args.port} (model {args.model})")
    return subprocess.call(command, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
