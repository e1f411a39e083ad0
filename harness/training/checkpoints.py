"""Where a run's resumable checkpoint lives, so that a crash at any moment leaves one complete, consistent state.

One process: checkpoints/last.pt, replaced atomically. Under torchrun every rank writes step<N>.rank<r>.pt; once
all ranks have written, rank 0 atomically points checkpoints/last.json at step N, and only then do the older files
go. Resuming checks the world size (a checkpoint of 4 ranks does not open in 2, nor in a single process) and that
every rank finds its file, on every rank at once, so a mistake is an error everywhere rather than a hang.
The checkpoint folder must be shared by the ranks (one machine, or a shared file system).
"""
from __future__ import annotations

import glob
import os

from harness.checkpoint_io import save_checkpoint
from harness.files import atomic_json, read_json


class CheckpointStore:
    def __init__(self, ckpt_dir: str, ctx=None):
        self.dir, self.ctx = ckpt_dir, ctx
        self.single = os.path.join(ckpt_dir, "last.pt")
        self.pointer = os.path.join(ckpt_dir, "last.json")

    def _rank_file(self, step: int, rank: int) -> str:
        return os.path.join(self.dir, f"step{step:08d}.rank{rank}.pt")

    def latest(self) -> str | None:
        """This rank's checkpoint to resume from, or None for a fresh run; ValueError when it cannot be resumed
        with this world size."""
        if self.ctx is None:
            if os.path.isfile(self.single):
                return self.single
            if os.path.isfile(self.pointer):
                world = self._read_pointer()["world_size"]
                raise ValueError(f"{self.dir} holds a torchrun checkpoint of {world} ranks; resume it with "
                                 f"torchrun --nproc_per_node {world}, or use --no-resume / another out folder")
            return None
        pointer = self._read_pointer() if os.path.isfile(self.pointer) else None
        seen = self.ctx.agree((pointer, os.path.isfile(self.single)))
        if any(p != seen[0][0] for p, _ in seen):
            raise ValueError(f"the ranks read different {self.pointer}: is {self.dir} shared by all ranks?")
        if pointer is None:
            if any(single for _, single in seen):
                raise ValueError(f"{self.dir} holds a single-process checkpoint (last.pt); resume it without "
                                 "torchrun, or use --no-resume / another out folder")
            return None
        if pointer["world_size"] != self.ctx.world_size:
            raise ValueError(f"{self.dir} was written by {pointer['world_size']} ranks, this run has "
                             f"{self.ctx.world_size}; resume with torchrun --nproc_per_node {pointer['world_size']}, "
                             "or use --no-resume / another out folder")
        path = self._rank_file(pointer["global_step"], self.ctx.rank)
        missing = [r for r, ok in enumerate(self.ctx.agree(os.path.isfile(path))) if not ok]
        if missing:
            raise ValueError(f"checkpoint files of step {pointer['global_step']} are missing for ranks {missing}")
        return path

    def _read_pointer(self) -> dict:
        return read_json(self.pointer, "checkpoint pointer", "resume with --no-resume to start over")

    def save(self, step: int, **state) -> str:
        if self.ctx is None:
            save_checkpoint(self.single, **state)
            return self.single
        path = self._rank_file(step, self.ctx.rank)
        save_checkpoint(path, **state)
        self.ctx.barrier()                       # every rank's file of this step is complete
        if self.ctx.is_main:
            atomic_json(self.pointer, {"global_step": step, "world_size": self.ctx.world_size})
        self.ctx.barrier()                       # the pointer names this step: older files may go
        for old in glob.glob(os.path.join(self.dir, f"step*.rank{self.ctx.rank}.pt")):
            if old != path:
                os.remove(old)
        return path
