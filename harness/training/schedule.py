"""Closed-form learning rate per step: resume-safe (no scheduler state), the same at any restart point."""
from __future__ import annotations


def learning_rate(step: int, steps_per_epoch: int, total_steps: int, optim) -> float:
    """lr at global step `step` (0-based) of a run of `total_steps` steps (train.max_steps included), for the run's
    optimiser settings `optim` (harness.config.OptimConfig: lr, schedule, milestones, gamma, warmup_epochs, power).
    Linear
    warmup over warmup_epochs up to lr (never above it, also when the warmup is not a whole number of steps), then
    "step": lr * gamma^(number of milestones passed, in epochs)   (the paper: 10/18/22 of 25 epochs), or
    "poly": lr * (1 - progress)^power over the steps after the warmup, reaching 0 at total_steps."""
    lr, schedule, milestones, gamma = optim.lr, optim.schedule, optim.milestones, optim.gamma
    warmup_epochs, power = optim.warmup_epochs, optim.power
    epoch = step / steps_per_epoch
    warmup_steps = warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return lr * min(1.0, (step + 1) / warmup_steps)
    if schedule == "step":
        return lr * gamma ** sum(epoch >= m for m in milestones)
    if schedule == "poly":
        progress = (step - warmup_steps) / max(1.0, total_steps - warmup_steps)
        return lr * max(0.0, 1.0 - progress) ** power
    raise ValueError(f"schedule={schedule!r} is not one of ('step', 'poly')")
