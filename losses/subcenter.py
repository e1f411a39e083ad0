"""Sub-center ArcFace (Deng et al., ECCV 2020): K centres per class, the class cosine the max over them.

`weight` is [K*C, d] with class c's sub-centres in rows c*K ... c*K + K - 1 (the layout of insightface's
fc7_weight and, transposed, pytorch-metric-learning's W), so their checkpoints map directly. The max over the K is
taken for the target and every other class before the margin; ties go to the first sub-centre. The target logit
is ArcFace's (theta_policy "threshold" as pytorch-metric-learning; insightface's MXNet code has none).

The paper's cleaning step (insightface recognition/subcenter_arcface/drop.py): per class the dominant sub-centre
is the one nearest to most of its samples (ties: the lowest index); samples whose angle to it exceeds 75 degrees
are dropped (kept when cos > cos 75 deg, strictly), and the class is retrained with K = 1 from its dominant
centre: `drop_step` gives both, `single_centre_weight` the [C, d] centres to start from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import checks
from .arcface import GRAD_MODES, THETA_POLICIES, additive_angular_margin
from .base import MarginHead


@dataclass
class DropStep:
    keep: torch.Tensor        # [N] bool: samples within max_angle of their class's dominant sub-centre
    dominant: torch.Tensor    # [C] long: the dominant sub-centre of each class (-1: no sample of the class)


class SubCenterArcFaceHead(MarginHead):
    """Defaults s=64, m=0.5, k=3 (the paper, pytorch-metric-learning and insightface)."""

    name = "subcenter_arcface"

    def __init__(self, num_classes: int, embedding_size: int, *, s: float = 64.0, m: float = 0.5, k: int = 3,
                 theta_policy: str = "threshold", grad_mode: str = "analytic", sample_rate: float = 1.0,
                 centre_init: str = "unit"):
        k = checks.positive_int("k (sub-centres per class)", k)
        super().__init__(num_classes, embedding_size, s=s, sample_rate=sample_rate, centre_init=centre_init,
                         centres_per_class=k)
        self.k = k
        self.m = checks.real("m", m, low=0.0, high=math.pi, high_open=True)
        self.theta_policy = checks.choice("theta_policy", theta_policy, THETA_POLICIES)
        self.grad_mode = checks.choice("grad_mode", grad_mode, GRAD_MODES)

    def target_logit(self, cos_y, norms):
        return self.s * additive_angular_margin(cos_y, self.m, self.theta_policy, self.grad_mode)

    @torch.no_grad()
    def drop_step(self, embeddings: torch.Tensor, labels: torch.Tensor, max_angle: float = 75.0) -> DropStep:
        """The cleaning step over a whole training set's embeddings (any order); max_angle in degrees."""
        checks.real("max_angle (degrees)", max_angle, low=0.0, high=180.0)
        checks.check_batch(embeddings, labels, self.embedding_size, self.num_classes)
        labels = labels.long()
        centres = F.normalize(self.weight.detach().float(), dim=1).view(self.num_classes, self.k, -1)
        cos = torch.einsum("nd,nkd->nk", F.normalize(embeddings.float(), dim=1), centres[labels])   # [N, K]
        nearest = cos.argmax(dim=1)
        counts = torch.zeros(self.num_classes, self.k, dtype=torch.long, device=labels.device)
        counts.index_put_((labels, nearest), torch.ones_like(labels), accumulate=True)
        dominant = torch.where(counts.sum(1) > 0, counts.argmax(dim=1), -1)
        keep = cos.gather(1, dominant[labels][:, None]).squeeze(1) > math.cos(math.radians(max_angle))
        return DropStep(keep=keep, dominant=dominant)

    @torch.no_grad()
    def single_centre_weight(self, dominant: torch.Tensor) -> torch.Tensor:
        """[C, d] the dominant sub-centre of each class (sub-centre 0 for a class without samples), for K = 1."""
        index = dominant.clamp_min(0).to(self.weight.device)
        return self.weight.detach().view(self.num_classes, self.k, -1)[torch.arange(self.num_classes), index].clone()
