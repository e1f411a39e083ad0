"""python -m harness train --config FILE [--set key=value ...] | evaluate --run DIR"""
from __future__ import annotations

import argparse
import sys

from .config import load_config


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m harness", description="Train and evaluate margin heads.")
    sub = ap.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train (or resume) a run")
    tr.add_argument("--config", help="TOML file (may name a `base` file it overrides)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override, e.g. --set train.epochs=3 --set head.name=arcface --set head.params.m=0.4")
    tr.add_argument("--out", help="run directory (same as --set out=...)")
    tr.add_argument("--no-resume", action="store_true", help="start over even if the run has a checkpoint")
    tr.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    ev = sub.add_parser("evaluate", help="evaluate a finished run from its stored checkpoint")
    ev.add_argument("--run", required=True)
    ev.add_argument("--checkpoint", default="final.pt")
    ev.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    try:
        if args.command == "train":
            from .trainer import train
            overrides = list(args.set) + ([f'out="{args.out}"'] if args.out else [])
            cfg = load_config(args.config, overrides)
            train(cfg, resume=not args.no_resume, evaluate=not args.no_eval)
        else:
            from .evaluate import evaluate_run, summary_line
            print(summary_line(evaluate_run(args.run, args.checkpoint, device=args.device)))
    except ValueError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
