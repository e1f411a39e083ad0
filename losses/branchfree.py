"""Elementwise branches as float arithmetic, for the heads' formulas over [rows, C] chunks.

Why: on the CPU builds this suite runs on, torch.where and masked_fill_ cost about 30 times a float multiply of
the same size even into a preallocated output, a comparison into a bool tensor and a bool -> float conversion about
4 times (`python benchmarks/branch_cost.py` prints the table for this machine); a head that reshapes its negatives
runs several per chunk. Here a branch is a 0/1 float mask and a selection that is exact on each branch:
`select(mask, a, b)` gives a bit for bit where mask is 1 and b bit for bit where it is 0 (b * 1 + 0 * a and
b * 0 + 1 * a, for finite a and b), about 4 multiplies of arithmetic.
"""
from __future__ import annotations

import torch


def above(x: torch.Tensor, bound) -> torch.Tensor:
    """1.0 where x > bound, else 0.0 (x - bound > 0 exactly when x > bound, under IEEE gradual underflow)."""
    return torch.sub(x, bound).sign_().clamp_(min=0.0)


def below(x: torch.Tensor, bound) -> torch.Tensor:
    """1.0 where x < bound, else 0.0."""
    return torch.sub(bound, x).sign_().clamp_(min=0.0)


def select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a where mask is 1.0, b where it is 0.0: exact on both branches for finite a and b."""
    return torch.addcmul(b * (1.0 - mask), mask, a)


def at_most(x: torch.Tensor, bound) -> torch.Tensor:
    """1.0 where x <= bound, else 0.0."""
    return above(x, bound).neg_().add_(1.0)
