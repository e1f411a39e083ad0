"""Reusing runs across benchmark invocations: a run folder is reused only when it was made by the same config."""
from __future__ import annotations

import hashlib
import json
import os
import shutil


def config_hash(cfg) -> str:
    """Hash of everything that changes results (not the output folder or the data cache location)."""
    d = cfg.to_dict()
    d.pop("out")
    d["data"].pop("cache_dir")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def prepare_run(cfg, done_file: str) -> str:
    """'done' when cfg.out holds a finished run (done_file present) of this config; 'resume' for an unfinished
    one; 'fresh' otherwise. A folder left by another config is removed, with a message."""
    name = os.path.basename(cfg.out.rstrip("/"))
    config_path = os.path.join(cfg.out, "config.json")
    if not os.path.isfile(config_path):
        return "fresh"
    with open(config_path) as f:
        old = json.load(f)
    if old != cfg.to_dict():
        print(f"{name}: results are from a different configuration; recomputing", flush=True)
        shutil.rmtree(cfg.out)
        return "fresh"
    if os.path.isfile(os.path.join(cfg.out, done_file)):
        return "done"
    print(f"{name}: resuming an unfinished run", flush=True)
    return "resume"


def add_real_data_args(ap) -> None:
    """The flags every benchmark shares for running on real data and another device."""
    ap.add_argument("--data", help="insightface RecordIO folder for real data (with --eval-bins)")
    ap.add_argument("--eval-bins", nargs="*", default=[], help="verification packs (.bin) for real data")
    ap.add_argument("--backbone", help="e.g. iresnet50 (real data: 112 px)")
    ap.add_argument("--device", help="cpu or cuda")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--set", action="append", default=[], help="any harness override, section.key=value")


def real_data_overrides(args) -> list:
    """Config overrides for the flags of add_real_data_args, after the user's own --set values."""
    overrides = list(args.set)
    if args.data:
        if not os.path.isdir(args.data):
            raise SystemExit(f"error: --data folder {args.data!r} not found (expected an insightface RecordIO "
                             f"folder with train.rec and train.idx)")
        if not args.eval_bins:
            raise SystemExit("error: --data needs --eval-bins (one or more verification packs, e.g. lfw.bin)")
        missing = [b for b in args.eval_bins if not os.path.isfile(b)]
        if missing:
            raise SystemExit(f"error: --eval-bins not found: {missing}")
        overrides += ['data.source="recordio"', f'data.path="{args.data}"',
                      f"data.eval_bins={json.dumps(args.eval_bins)}", "data.size=112"]
    if args.backbone:
        overrides.append(f'model.backbone="{args.backbone}"')
    if args.device:
        overrides.append(f'train.device="{args.device}"')
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    return overrides


def train_in_worker(cfg_dict: dict, threads: int, slot: int = 0):
    """Train + evaluate one run (in a worker process or inline); returns (metrics, seconds). Worker `slot` uses
    GPU slot mod the GPU count, so --jobs N spreads cells over the GPUs of one machine."""
    import time

    import torch

    from .config import RunConfig
    from .trainer import train
    torch.set_num_threads(threads)
    if torch.cuda.is_available():
        torch.cuda.set_device(slot % torch.cuda.device_count())
    cfg = RunConfig.from_dict(cfg_dict)
    t0 = time.perf_counter()
    result = train(cfg, quiet=True)
    return result["metrics"], time.perf_counter() - t0


def run_all(cfgs: list, jobs: int = 1):
    """Yield (cfg, metrics, seconds) as each run finishes, in order; jobs > 1 trains in spawned processes
    (not forked: a forked child of a process that ran OpenMP work can deadlock)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    if jobs <= 1:
        for cfg in cfgs:
            yield (cfg, *train_in_worker(cfg.to_dict(), threads))
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(train_in_worker, cfg.to_dict(), threads, i % jobs) for i, cfg in enumerate(cfgs)]
        for cfg, fut in zip(cfgs, futures):
            yield (cfg, *fut.result())


def write_csv(path: str, rows: list) -> None:
    """A tidy table, one dict per row, written atomically (temp file + rename)."""
    import csv
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def metric_columns(metrics: dict) -> dict:
    """The table columns of a run's evaluation (its first evaluation set): accuracy, TAR@FAR, quality metrics."""
    name, m = next(iter(metrics["sets"].items()))
    row = {"eval_set": name, "accuracy": m["accuracy"], "accuracy_std_folds": m["accuracy_std"]}
    for far, tar in m["tar_at_far"].items():
        row[f"tar_far_{far}"] = tar
    row["spearman_rho"] = m.get("magnitude_vs_quality", {}).get("spearman_rho", float("nan"))
    row["erc_area"] = m["erc"]["area"]
    row["erc_area_ground_truth"] = m.get("erc_ground_truth", {}).get("area", float("nan"))
    row["mean_norm"] = m.get("mean_norm", float("nan"))
    return row


def cached_result(cfg, done_file: str):
    """The stored result row if cfg.out finished with exactly this config (else None; stale folders go)."""
    if prepare_run(cfg, done_file) != "done":
        return None
    with open(os.path.join(cfg.out, done_file)) as f:
        return json.load(f)


def run_sweep(cfgs: list, done_file: str, make_row, *, jobs: int = 1, unit: str = "run", where: str = "",
              describe=lambda row: "") -> tuple[list, int]:
    """Every run of cfgs, reusing the finished ones (their stored `done_file` row) and training the rest with a
    progress bar; make_row(cfg, metrics, seconds) builds a new run's row, stored as cfg.out/done_file.
    Returns (rows in cfgs' order, how many runs were trained)."""
    import sys

    from tqdm import tqdm

    from .runstate import atomic_json
    rows, todo = {}, []
    for cfg in cfgs:
        row = cached_result(cfg, done_file)
        if row is None:
            todo.append(cfg)
        else:
            rows[cfg.out] = row
    if rows:
        print(f"{len(rows)} {unit}(s) reused from {where}", flush=True)
    bar = tqdm(total=len(cfgs), initial=len(rows), desc=f"{unit}s", unit=unit, file=sys.stdout)
    for cfg, metrics, seconds in run_all(todo, jobs):
        row = make_row(cfg, metrics, seconds)
        atomic_json(os.path.join(cfg.out, done_file), row)
        rows[cfg.out] = row
        bar.update(1)
        bar.set_postfix(last=describe(row))
    bar.close()
    return [rows[cfg.out] for cfg in cfgs], len(todo)
