"""The command line of the harness, one function per subcommand (python -m harness ..., magface-bench ...):

python -m harness train --config FILE [--set key=value ...] [--dry-run]
python -m harness sweep SPEC.toml [--quick] [--out DIR] [--jobs N] [--set key=value ...] [--dry-run | --prune]
python -m harness evaluate --run DIR
python -m harness evaluate --ijb ROOT --ijb-set IJBC --checkpoint PATH --format magface|insightface|run --out OUT
python -m harness publish OUT [--name NAME] [--arrays] [--allow-dirty]
python -m harness report [--check]
python -m harness align --images DIR --landmarks FILE --out DIR [--size 112]
python -m harness embed --checkpoint PATH --format magface|insightface|run [--backbone NAME] --images DIR --out OUT
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from harness.bench_cli import (
    add_publish_args,
    add_repo_arg,
    publish_result,
    refresh_outputs,
    sweep_or_prune,
    tables_render,
)
from harness.config import load_config, resolved_head
from harness.data import RecordIODataset, image_folder, list_file
from harness.data.align import align_folder
from harness.evaluation import ijb_eval
from harness.evaluation.embed import Release, embed_folder, evaluate_release
from harness.evaluation.evaluate import evaluate_run, summary_line
from harness.evaluation.ijb_eval import DEFAULT_MODES
from harness.models import build_backbone
from harness.publishing.publish import publish
from harness.publishing.repo import checkout
from harness.publishing.report import report
from harness.sweeps.spec import load_spec
from harness.training.trainer import TrainingDiverged, train

OVERRIDE_HELP = ("override, e.g. --set train.epochs=3 --set head.name=arcface --set head.params.m=0.4 (an inline "
                 "table --set head.params={m=0.4} replaces the whole table)")
DIVERGED_HELP = ("What to try: a lower optim.lr, a warm-up (optim.warmup_epochs), gradient clipping "
                 "(optim.grad_clip), or train.amp='none'. New settings are a new run (another fingerprint: give "
                 "another --out). Add --debug for the traceback.")


def describe(cfg) -> str:
    """What a run would train, without training or generating data: config, data, backbone and head."""
    d = cfg.data
    if d.source == "synthetic":
        s = d.synthetic
        classes, size = s.train_identities, s.size
        data = (f"synthetic faces: {s.train_identities} x {s.train_images_per_identity} training images of "
                f"{size} px, {s.eval_identities} x {s.eval_images_per_identity} evaluation images, label noise "
                f"{s.label_noise}, garbage {s.garbage}, seed {s.seed} (cache key {s.key()})")
    else:
        ds = {"recordio": RecordIODataset, "folder": image_folder, "list": list_file}[d.source](d.path)
        classes, size = ds.num_classes, ds[0][0].shape[-1]
        data = f"{d.source} {d.path}: {len(ds):,} images of {size} px, {classes:,} classes; eval {d.eval_bins}"
    backbone = build_backbone(cfg.model.backbone, cfg.model.embedding_size, size, cfg.model.dropout, cfg.model.width)
    head = resolved_head(cfg, classes)
    n_back = sum(p.numel() for p in backbone.parameters())
    n_head = sum(p.numel() for p in head.parameters())
    lines = [f"config (fingerprint {cfg.fingerprint()}):", json.dumps(cfg.to_dict(), indent=1),
             f"data: {data}",
             f"backbone: {cfg.model.backbone}, {n_back:,} parameters, embedding {cfg.model.embedding_size}",
             f"head: {head.hparams}, {n_head:,} parameters",
             f"training: {cfg.train.epochs} epochs, batch {cfg.train.batch_size}, device {cfg.train.device}, "
             f"into {cfg.out}"]
    line = head.startup_check()
    return "\n".join(lines + ([line] if line else []))


def evaluate_ijb_command(args, parser) -> None:
    if args.run or not (args.checkpoint and args.format and args.out):
        parser.error("--ijb evaluates one network on an IJB release: give --checkpoint PATH (a run folder with "
                     "--format run), --format and --out")
    device = "cpu" if args.device == "auto" else args.device
    summary = ijb_eval.run(ijb_eval.Request(
        args.ijb, args.ijb_set, args.checkpoint, args.format, args.out, backbone=args.backbone,
        modes=tuple(m for m in args.modes.split(",") if m), qmagface=args.qmagface, qmagface_fit=args.qmagface_fit,
        device=device, n_boot=args.bootstrap, batch_size=args.batch_size, workers=args.workers))
    print(ijb_eval.table(summary))
    print(f"wrote {args.out}/{args.ijb_set.lower()}.json and {args.ijb_set.lower()}_roc.npz")


# --- train ----------------------------------------------------------------------------------------------------------
def add_train(sub) -> None:
    p = sub.add_parser("train", help="train (or resume) a run")
    p.add_argument("--config", help="TOML file (may name a `base` file it overrides)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=OVERRIDE_HELP)
    p.add_argument("--out", help="run directory (same as --set out=...)")
    p.add_argument("--no-resume", action="store_true", help="start over even if the run has a checkpoint")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config, data, backbone and head; "
                                                          "train nothing")
    p.set_defaults(handler=run_train, subparser=p)


def run_train(args, parser) -> None:
    cfg = load_config(args.config, list(args.set) + ([f'out="{args.out}"'] if args.out else []))
    if args.dry_run:
        print(describe(cfg))
        return
    train(cfg, resume=not args.no_resume, evaluate=not args.no_eval)


# --- sweep ----------------------------------------------------------------------------------------------------------
def add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="run a sweep spec (configs/sweeps/*.toml): train what is missing, reuse the rest")
    p.add_argument("spec", nargs="?", help="sweep spec TOML file")
    p.add_argument("--quick", action="store_true", help="the spec's [quick] variant")
    p.add_argument("--out", help="results folder (default results/<name>, with --quick results/<name>_quick)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once in separate processes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state; train nothing")
    p.add_argument("--prune", action="store_true", help="remove the run folders under OUT/runs this spec does "
                                                        "not name (listing them)")
    p.add_argument("--retry-failed", action="store_true", help="train again the runs that failed before")
    add_publish_args(p)
    p.set_defaults(handler=run_sweep, subparser=p)


def run_sweep(args, parser) -> None:
    if not args.spec:
        parser.error("a sweep spec is required (e.g. configs/sweeps/ablation.toml)"
                     + ("; --prune removes only what a named spec does not name" if args.prune else ""))
    result = sweep_or_prune(load_spec(args.spec, quick=args.quick), args.out, args.set, args)
    if args.publish and result is not None:
        publish_result(args, result)


# --- publish, report ------------------------------------------------------------------------------------------------
def add_publish(sub) -> None:
    p = sub.add_parser("publish", help="copy a finished benchmark or sweep folder's tables (and arrays) to "
                                       "results/published/NAME, with its provenance, and its figures to figures/")
    p.add_argument("out", help="the finished folder, e.g. results/magface_regime")
    p.add_argument("--name", help="published folder name (default: the sweep's name)")
    p.add_argument("--arrays", action="store_true", help="also each run's evaluation arrays and last dump")
    p.add_argument("--allow-dirty", action="store_true", help="publish from a tree with uncommitted changes "
                                                              "(recorded)")
    add_repo_arg(p)
    p.set_defaults(handler=run_publish, subparser=p)


def run_publish(args, parser) -> None:
    repo = checkout(args.repo)
    dest = publish(args.out, args.name, arrays=args.arrays, allow_dirty=args.allow_dirty, repo=repo,
                   before_swap=tables_render(repo), command=f"python -m harness publish {' '.join(sys.argv[2:])}")
    print(f"published {args.out} to {dest}")
    refresh_outputs(repo)


def add_report(sub) -> None:
    p = sub.add_parser("report", help="render the result tables of README.md, paper_repro.md and docs/ from the "
                                      "published results (figures/tables/*.md templates)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 naming the stale blocks")
    add_repo_arg(p)
    p.set_defaults(handler=run_report, subparser=p)


def run_report(args, parser) -> None:
    stale = report(args.repo, check=args.check)
    for doc, blocks in stale.items():
        if blocks:
            print(f"{doc}: {'stale' if args.check else 'rewrote'} {', '.join(blocks)}")
    if args.check and any(stale.values()):
        sys.exit("error: the committed tables differ from the published results; run python -m harness report")


# --- embed, align ---------------------------------------------------------------------------------------------------
def add_embed(sub) -> None:
    p = sub.add_parser("embed", help="embeddings and magnitudes of a folder of aligned face images, with a released "
                                     "checkpoint or a run of this suite")
    p.add_argument("--checkpoint", required=True, help="a release's file, or a run folder with --format run")
    p.add_argument("--format", required=True, choices=("magface", "insightface", "run"))
    p.add_argument("--backbone", help="the release's iResNet (iresnet18/34/50/100); not with --format run")
    p.add_argument("--images", required=True, help="folder of aligned face images (searched recursively)")
    p.add_argument("--out", required=True, help="folder for embeddings.npy and magnitudes.csv")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.set_defaults(handler=run_embed, subparser=p)


def run_embed(args, parser) -> None:
    done = embed_folder(args.checkpoint, args.format, args.images, args.out, args.backbone, args.batch_size,
                        args.device)
    print(f"embedded {done['images']} images ({done['dimension']}-d, input {done['preprocessing']}) into "
          f"{args.out}/embeddings.npy and {args.out}/magnitudes.csv")


def add_align(sub) -> None:
    p = sub.add_parser("align", help="five-point alignment of a detector's output to the ArcFace template")
    p.add_argument("--images", required=True, help="folder of the (loose) images the landmarks file names")
    p.add_argument("--landmarks", required=True, help="per line: image name, then 10 numbers (x1 y1 ... x5 y5; an "
                                                      "11th, a detector score, is ignored) or 136 (68 points)")
    p.add_argument("--out", required=True, help="folder for the aligned crops (same relative names)")
    p.add_argument("--size", type=int, default=112, help="crop size (the template is scaled by size/112)")
    p.set_defaults(handler=run_align, subparser=p)


def run_align(args, parser) -> None:
    done = align_folder(args.images, args.landmarks, args.out, args.size)
    print(f"aligned {done} image(s) into {args.out} ({args.size}x{args.size}, ArcFace five-point template)")


# --- evaluate -------------------------------------------------------------------------------------------------------
def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a finished run from its stored checkpoint, or a released network "
                                        "(--format) on verification packs or an IJB release")
    p.add_argument("--run", help="a run folder of this suite")
    p.add_argument("--checkpoint", help="with --run: the checkpoint file name (default final.pt); with --format: "
                                        "the released checkpoint's path")
    p.add_argument("--format", choices=("magface", "insightface", "run"), help="evaluate a released checkpoint "
                   "(run: a run folder of this suite, with --ijb)")
    p.add_argument("--backbone", help="with --format: the released iResNet (iresnet18/34/50/100)")
    p.add_argument("--eval-bins", default="", help="with --format: comma-separated verification packs (.bin)")
    p.add_argument("--out", help="with --format: folder for metrics.json and the per-pack arrays")
    p.add_argument("--device", default="auto")
    p.add_argument("--ijb", metavar="ROOT", help="an IJB-B/C release in insightface's layout (ROOT/IJBC/loose_crop, "
                                                  "ROOT/IJBC/meta); with --checkpoint, --format and --out")
    p.add_argument("--ijb-set", default="IJBC", choices=("IJBB", "IJBC"))
    p.add_argument("--modes", default=",".join(DEFAULT_MODES),
                   help="IJB protocol modes, comma-separated: N<0|1>D<0|1>F<0|1> (norms kept, detector score, flip "
                        "fusion), MagFace, MagFace+")
    p.add_argument("--qmagface", action="store_true", help="IJB: also QMagFace's quality-aware score (its published "
                                                             "alpha, beta)")
    p.add_argument("--qmagface-fit", action="store_true", help="IJB: QMagFace with alpha, beta fitted on half the "
                                                                 "subjects, reported on the other half")
    p.add_argument("--bootstrap", type=int, default=200, help="IJB: subject resamples for the intervals (0: none)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=0, help="IJB: DataLoader workers decoding and aligning crops")
    p.set_defaults(handler=run_evaluate, subparser=p)


def run_evaluate(args, parser) -> None:
    """A run of this suite (--run), a release on verification packs (--format), or either on IJB (--ijb)."""
    if args.ijb:
        evaluate_ijb_command(args, parser)
    elif args.format:
        if args.run or not (args.checkpoint and args.backbone and args.out):
            parser.error("--format evaluates a released checkpoint: give --checkpoint PATH, --backbone, "
                         "--eval-bins and --out, not --run")
        bins = [b for b in args.eval_bins.split(",") if b]
        release = Release(args.checkpoint, args.format, args.backbone)
        print(summary_line(evaluate_release(release, bins, args.out,
                                            device="cpu" if args.device == "auto" else args.device)))
    else:
        if not args.run:
            parser.error("give --run RUN_FOLDER (a run of this suite) or --format with a released --checkpoint")
        print(summary_line(evaluate_run(args.run, args.checkpoint or "final.pt", device=args.device)))


# --- the parser -----------------------------------------------------------------------------------------------------
SUBCOMMANDS = (add_train, add_sweep, add_publish, add_report, add_embed, add_align, add_evaluate)


def parser() -> argparse.ArgumentParser:
    prog = "magface-bench" if os.path.basename(sys.argv[0]) == "magface-bench" else "python -m harness"
    ap = argparse.ArgumentParser(prog=prog, description="Train and evaluate margin heads.")
    ap.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = ap.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    for p in sub.choices.values():   # also accepted after the command (python -m harness train ... --debug)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return ap


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    try:
        args.handler(args, args.subparser)
    except TrainingDiverged as exc:
        if args.debug:
            raise
        sys.exit(f"error: training diverged: {exc}.\n{DIVERGED_HELP}")
    except (ValueError, OSError) as exc:
        if args.debug:
            raise
        sys.exit(f"error: {exc}")
