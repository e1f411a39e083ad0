"""One command-line convention for every benchmark script, so a flag means the same thing everywhere:

- lists are comma-separated (`--heads magface,arcface`, `--seeds 0,1,2`, `--eval-bins a.bin,b.bin`);
- `--out DIR` is always a folder (default results/<benchmark>, with --quick results/<benchmark>_quick);
- figures are drawn into OUT; `--figures DIR` also copies each PNG into DIR (as *_quick.png for --quick); only
  publishing copies them into the repository's figures/ (a run never writes a tracked file);
- `--device` picks cpu, cuda or auto; `--jobs N` runs N trainings at once; `--quick` is the small variant;
  `--seeds` lists training seeds; `--set section.key=value` is any harness override; `--dry-run` prints the
  plan and trains nothing; `--prune` removes the runs under OUT that the benchmark's sweep no longer names;
  `--publish` copies the finished results to results/published/ (harness.publishing.publish).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from harness.publishing.publish import publish
from harness.publishing.repo import checkout
from harness.publishing.report import report
from harness.sweeps.runner import prune_spec, run_spec
from harness.sweeps.spec import SweepSpec, load_spec


def comma_list(kind=str):
    """argparse type: 'a,b,c' -> [kind(a), kind(b), kind(c)], refusing empty lists and repeats."""
    def parse(text: str) -> list:
        try:
            values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one value, got {text!r}")
        repeats = sorted({str(v) for v in values if values.count(v) > 1})
        if repeats:
            raise argparse.ArgumentTypeError(f"repeated values {repeats} in {text!r}")
        return values
    parse.__name__ = f"comma-separated {kind.__name__} list"
    return parse


def add_dry_run(ap) -> None:
    ap.add_argument("--dry-run", action="store_true", help="check the arguments, print what would run, and exit")


def dry_run(args) -> bool:
    """True (after printing the resolved arguments) when --dry-run was given."""
    if args.dry_run:
        print("dry run: " + ", ".join(f"{k}={v!r}" for k, v in vars(args).items()))
    return args.dry_run


def add_output_args(ap, benchmark: str, figures: bool = True) -> None:
    ap.add_argument("--out", metavar="DIR", help=f"results folder (default results/{benchmark}, with --quick "
                                                 f"results/{benchmark}_quick)")
    if figures:
        ap.add_argument("--figures", default="", metavar="DIR",
                        help="also copy each PNG into DIR (*_quick.png for --quick); the figures are in OUT, and "
                             "--publish copies them into the repository's figures/")


def output_dir(args, benchmark: str) -> str:
    out = args.out or os.path.join("results", f"{benchmark}_quick" if getattr(args, "quick", False) else benchmark)
    if os.path.isfile(out):
        raise SystemExit(f"error: --out {out!r} is a file; --out names a folder")
    os.makedirs(out, exist_ok=True)
    return out


def add_sweep_args(ap, spec_path: str, seeds: bool = True) -> None:
    """The flags of a benchmark that is a sweep: its spec's base config, real data, device, seeds, jobs."""
    ap.add_argument("--config", help=f"harness config of every run (default: the base of {spec_path})")
    ap.add_argument("--quick", action="store_true", help="the spec's small variant (a few minutes on a CPU)")
    if seeds:
        ap.add_argument("--seeds", type=comma_list(int), help="training seeds (replaces the spec's seed axis)")
    ap.add_argument("--data", metavar="DIR", help="insightface RecordIO folder for real data (with --eval-bins)")
    ap.add_argument("--eval-bins", type=comma_list(str), default=[], metavar="A.bin,B.bin",
                    help="verification packs (.bin) for real data")
    ap.add_argument("--eval-ijb", metavar="ROOT", help="also evaluate every run on an IJB-B/C release (insightface's "
                                                       "layout; eval.ijb, modes in eval.ijb_modes)")
    ap.add_argument("--eval-ijb-set", choices=("IJBB", "IJBC"), default="IJBC")
    ap.add_argument("--backbone", help="e.g. iresnet50 (real data: 112 px)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where every run trains")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any harness override for every run, e.g. --set train.amp=\"bf16\"")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at once in separate processes")
    add_dry_run(ap)
    ap.add_argument("--prune", action="store_true",
                    help="remove the run folders under OUT/runs that this sweep (with these flags) does not name")
    ap.add_argument("--retry-failed", action="store_true", help="train again the runs that failed before")
    add_publish_args(ap)


def sweep_overrides(args) -> list:
    """Config overrides for the shared flags, after the user's own --set values."""
    overrides = list(args.set)
    if args.data:
        if not os.path.isdir(args.data):
            raise SystemExit(f"error: --data folder {args.data!r} not found (expected an insightface RecordIO "
                             f"folder with train.rec and train.idx)")
        if not args.eval_bins:
            raise SystemExit("error: --data needs --eval-bins (one or more verification packs, e.g. lfw.bin)")
        overrides += ['data.source="recordio"', f'data.path="{args.data}"',
                      f"data.eval_bins={json.dumps(args.eval_bins)}"]
    elif args.eval_bins:
        raise SystemExit("error: --eval-bins evaluates real data and needs --data (the built-in data has its own "
                         "pairs)")
    missing = [b for b in args.eval_bins if not os.path.isfile(b)]
    if missing:
        raise SystemExit(f"error: --eval-bins not found: {missing}")
    if getattr(args, "eval_ijb", None):
        if not os.path.isdir(args.eval_ijb):
            raise SystemExit(f"error: --eval-ijb folder {args.eval_ijb!r} not found (an IJB release in insightface's "
                             "layout: ROOT/IJBC/loose_crop and ROOT/IJBC/meta)")
        overrides += [f"eval.ijb={json.dumps(args.eval_ijb)}", f'eval.ijb_set="{args.eval_ijb_set}"']
    if args.backbone:
        overrides.append(f'model.backbone="{args.backbone}"')
    if args.device:
        overrides.append(f'train.device="{args.device}"')
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    return overrides


def benchmark_spec(args, spec_path: str, axes: dict | None = None) -> SweepSpec:
    """The benchmark's spec with its --quick variant, --config base, --seeds and the given axis values (None: the
    spec's) applied."""
    if getattr(args, "publish", False) and args.quick:
        raise SystemExit("error: --publish publishes the full benchmark, not its --quick variant")
    axes = {"seed": getattr(args, "seeds", None), **(axes or {})}
    try:
        spec = load_spec(spec_path, quick=args.quick)
        if args.config:
            spec = spec.with_base(args.config)
        for axis, values in axes.items():
            if values:
                spec = spec.with_axis(axis, values)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    return spec


QUICK_NOTE = ("--quick: a smoke test of the whole path on a small data set and a short budget; its numbers are near "
              "noise, not the benchmark's results (those come without --quick)")


def run_benchmark_sweep(args, spec: SweepSpec, describe=None):
    """Run (or dry-run, or prune) the sweep into args.out; SystemExit with the message on bad input."""
    out = args.out or spec.default_out()
    if getattr(args, "quick", False) and not (args.dry_run or args.prune):
        print(QUICK_NOTE)
    try:
        return sweep_or_prune(spec, out, sweep_overrides(args), args, describe)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def sweep_or_prune(spec: SweepSpec, out: str | None, overrides, args, describe=None):
    """The sweep as the flags say: --prune removes what the spec does not name (None), --dry-run prints the plan
    (None), else the runs are trained or reused (the SweepResult)."""
    if args.dry_run and args.prune:
        raise ValueError("--dry-run and --prune exclude each other")
    if args.prune:
        return prune_spec(spec, out, overrides)
    return run_spec(spec, out, overrides, jobs=args.jobs, dry_run=args.dry_run, retry_failed=args.retry_failed,
                    describe=describe)


def run_quality_sweep(args, spec_path: str, describe=None):
    """run_benchmark_sweep for a benchmark that needs ground-truth quality, i.e. the built-in synthetic data: --data,
    or a --config on other data, is refused. None after --dry-run or --prune."""
    refusal = "error: this benchmark needs ground-truth quality, i.e. the built-in synthetic data"
    if args.data:
        raise SystemExit(f"{refusal} (no --data)")
    result = run_benchmark_sweep(args, benchmark_spec(args, spec_path), describe=describe)
    if result is not None and result.runs[0].cfg.data.source != "synthetic":
        raise SystemExit(refusal)
    return result


def add_publish_args(ap) -> None:
    ap.add_argument("--publish", action="store_true", help="when finished, copy the tables (and the arrays the "
                                                           "figures need) to results/published/ with provenance")
    ap.add_argument("--allow-dirty", action="store_true", help="with --publish: allow uncommitted changes "
                                                               "(recorded)")
    add_repo_arg(ap)


def add_repo_arg(ap) -> None:
    ap.add_argument("--repo", metavar="DIR", help="the checkout whose README, docs/, figures/ and results/published/ "
                                                  "publishing and the report write (default: the git checkout "
                                                  "around the current folder)")


def publish_result(args, result, arrays: bool = False) -> str | None:
    """With --publish: publish the finished sweep result (harness.publishing.publish), recording this command line."""
    return publish_output(args, result.out, arrays)


def publish_output(args, out: str, arrays: bool = False) -> str | None:
    """With --publish: publish the benchmark's finished folder OUT (harness.publishing.publish), recording this
    command line, then refresh the generated tables and the notebooks."""
    if not getattr(args, "publish", False):
        return None
    if getattr(args, "quick", False):
        raise SystemExit("error: --publish publishes the full benchmark, not its --quick variant")
    module = "-m harness" if sys.argv[0].endswith("__main__.py") else os.path.relpath(sys.argv[0])
    try:
        repo = checkout(getattr(args, "repo", None))
        dest = publish(out, arrays=arrays, allow_dirty=args.allow_dirty, before_swap=tables_render(repo), repo=repo,
                       command=" ".join(["python", module, *sys.argv[1:]]))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"published {out} to {dest}")
    refresh_outputs(repo)
    return dest


def tables_render(repo: str):
    """The check before a publish replaces results/published/NAME: the report tables must render from the new
    folder (a benchmark run with other arguments may lack rows the tables cite); ValueError otherwise, nothing
    replaced."""
    def check(name: str, folder: str) -> None:
        report(repo, check=True, overrides={name: folder})
    return check


def refresh_outputs(root: str) -> None:
    """After publishing: re-render the result tables of the checkout's documents (harness.publishing.report) and
    re-execute the notebooks in figures/ so their stored outputs show the new results (a separate process: figures/ sits
    on
    top of harness)."""
    try:
        for doc, blocks in report(root).items():
            print(f"{doc}: {'rewrote ' + ', '.join(blocks) if blocks else 'tables already current'}")
    except ValueError as exc:
        raise SystemExit(f"error: the results are published, but the tables cannot be rendered from them: "
                         f"{exc}") from None
    script = os.path.join(root, "figures", "refresh_notebooks.py")
    if os.path.isfile(script):
        done = subprocess.run([sys.executable, script])
        if done.returncode != 0:
            raise SystemExit(f"error: refreshing the notebooks failed (exit {done.returncode}); the results are "
                             f"published; rerun python figures/refresh_notebooks.py after fixing it")


def load_rows(out: str, table: str, command: str) -> list:
    """The `rows` of a finished analysis's JSON table in OUT; FileNotFoundError naming the command otherwise."""
    path = os.path.join(out, table)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no results in {out}; run {command} first")
    with open(path) as f:
        return json.load(f)["rows"]
