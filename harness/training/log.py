"""What a run writes while it trains: metrics.jsonl/.csv (and TensorBoard when installed), the progress
bar, and the per-sample dumps of the paper's Fig. 3 data."""
from __future__ import annotations

import csv
import json
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from harness.files import read_jsonl
from harness.locks import temporary_name

try:   # TensorBoard when installed (pip install tensorboard); the JSONL/CSV log is always written
    from torch.utils.tensorboard import SummaryWriter
except ImportError:
    SummaryWriter = None




def target_probability(out) -> torch.Tensor:
    """Softmax probability of the own class (with the margin): exp(-cross-entropy). For UniFace's sigmoid loss
    exp(-loss) is the product of its per-class sigmoid terms instead (no softmax to take a probability from)."""
    return torch.exp(-out.per_sample_loss.detach())


class MetricsLog:
    """metrics.jsonl (one row per log step), rewritten as metrics.csv at the end; rows past a resume point
    (left by a killed run) are dropped so the log matches the resumed state, and so is a torn last line (a crash or
    a full disk mid-write: its step is past every checkpoint, which is written after the row)."""

    def __init__(self, run_dir: str, resume_step: int):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        if os.path.isfile(self.path):
            rows = [r for r in read_jsonl(self.path) if r["step"] <= resume_step]
            tmp = temporary_name(self.path)
            with open(tmp, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            os.replace(tmp, self.path)
        self.file = open(self.path, "a")  # noqa: SIM115 - stays open for the run; close() closes it
        self.board = None
        if SummaryWriter is not None:
            self.board = SummaryWriter(os.path.join(run_dir, "tensorboard"), purge_step=resume_step + 1)

    def write(self, row: dict):
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.board is not None:
            for key, value in row.items():
                if key != "step":
                    self.board.add_scalar(key, value, row["step"])

    def close(self):
        self.file.close()
        if self.board is not None:
            self.board.close()
        rows = read_jsonl(self.path)
        if rows:
            keys = list(dict.fromkeys(k for r in rows for k in r))
            csv_path = self.path.replace(".jsonl", ".csv")
            tmp = temporary_name(csv_path)
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, keys)
                w.writeheader()
                w.writerows(rows)
            os.replace(tmp, csv_path)


class Progress:
    """The progress bar, the metrics log (rank 0 writes) and the per-sample dumps of one training session."""

    def __init__(self, run):
        self.log = MetricsLog(run.cfg.out, run.global_step) if run.main else None
        self.bar = tqdm(total=run.total_steps, initial=run.global_step, disable=not (run.verbose and run.main),
                        desc=f"{run.cfg.head.name}", unit="step", file=sys.stdout, dynamic_ncols=True)
        self.t_last, self.images = time.perf_counter(), 0

    def update(self, run, out, lr: float, batch: int) -> None:
        """After each step. The metrics row is computed on every rank: sharded accuracy is a collective."""
        cfg, step = run.cfg.train, run.global_step
        self.images += batch * run.world
        self.bar.update(1)
        if step % cfg.log_every == 0 or step == run.total_steps:
            now = time.perf_counter()
            row = metrics_row(out, run.head, step, run.epoch, lr, self.images / (now - self.t_last))
            self.t_last, self.images = now, 0
            if self.log:
                self.log.write(row)
            self.bar.set_postfix(loss=f"{row['loss']:.3f}", g=f"{row.get('mag_g', 0):.3f}",
                                 mag=f"{row['norm_mean']:.1f}", acc=f"{row['accuracy']:.2f}",
                                 ips=f"{row['images_per_s']:.0f}")
        if run.main and cfg.dump_every and (step % cfg.dump_every == 0 or step == run.total_steps):
            write_dump(run.cfg.out, step, out, all_logits=run.ctx is None)

    def close(self) -> None:
        self.bar.close()
        if self.log:
            self.log.close()


def metrics_row(out, head, step, epoch, lr, ips) -> dict:
    """One metrics row: losses, norms, target cosine, accuracy, throughput, plus the head's own statistics."""
    norms = out.norms.detach()
    return {"step": step, "epoch": epoch, "lr": lr, "loss": out.loss.item(), "identity_loss": out.identity_loss.item(),
            **{k: v.item() for k, v in out.aux.items()}, "norm_mean": norms.mean().item(),
            "norm_min": norms.min().item(), "norm_max": norms.max().item(), "cos_mean": out.cos_target.mean().item(),
            "accuracy": out.accuracy(), "images_per_s": ips, **head.log_stats(norms, out.cos_target.detach())}


def write_dump(run_dir, step, out, all_logits: bool = True):
    """Per-sample (magnitude, target cosine, target probability, lse_neg) of this batch and the batch's scale s
    (AdaCos adapts it), for the paper's Fig. 3 and
    the theory's optimum a*(cos theta_y, lse_neg). lse_neg = log sum_{j != y} exp(logit_j) over the logit columns
    (with Partial FC the sampled classes only); NaN under torchrun, where a rank holds only its shard."""
    path = os.path.join(run_dir, "dumps", f"step_{step:08d}.npz")
    tmp = temporary_name(path, ".npz")
    with torch.no_grad():
        if all_logits:
            others = out.logits.float().scatter(1, out.target_column[:, None], float("-inf"))
            lse_neg = torch.logsumexp(others, dim=1).cpu().numpy()
        else:
            lse_neg = np.full(len(out.labels), np.nan)
    np.savez(tmp, norms=out.norms.detach().cpu().numpy(), cos_target=out.cos_target.detach().cpu().numpy(),
             probability=target_probability(out).cpu().numpy(), labels=out.labels.cpu().numpy(),
             per_sample_loss=out.per_sample_loss.detach().cpu().numpy(), lse_neg=lse_neg,
             scale=np.float64(out.scale if out.scale is not None else float("nan")))
    os.replace(tmp, path)
