"""AdaCos (Zhang et al., CVPR 2019): no margin, and a scale s that adapts to each batch.

s starts at sqrt(2) * ln(C - 1). Before a training batch's logits (as FaceX-Zoo's head/AdaCos.py and the
pytorch-adacos code it follows): B_avg = (1/B) sum_i sum_{j != y_i} exp(s_old cos_ij), theta_med the median target
angle (torch.median: the lower middle value for an even batch), s = ln(B_avg) / cos(min(pi/4, theta_med)); the new s
is used for this batch. Logits s cos_j for every class. s lives in a buffer (`scale`), so checkpoints and resumes
carry it (the reference keeps it in a plain attribute that is not saved); evaluation uses the stored s unchanged.
Under Partial FC B_avg sums over the sampled classes.
"""
from __future__ import annotations

import math

import torch

from . import checks
from .base import MarginHead


def initial_scale(num_classes: int) -> float:
    return math.sqrt(2.0) * math.log(num_classes - 1)


class AdaCosHead(MarginHead):
    name = "adacos"
    min_classes = 3

    def __init__(self, num_classes: int, embedding_size: int, *, sample_rate: float = 1.0,
                 centre_init: str = "unit"):
        if checks.positive_int("num_classes", num_classes) < 3:
            raise ValueError(f"num_classes={num_classes}: AdaCos needs at least 3 classes (its starting scale "
                             "sqrt(2) ln(C - 1) must be positive)")
        super().__init__(num_classes, embedding_size, s=initial_scale(num_classes), sample_rate=sample_rate,
                         centre_init=centre_init)
        self.register_buffer("scale", torch.tensor(self.s, dtype=torch.float64))

    def next_scale(self, mean_negative_exp: float, cos_y: torch.Tensor) -> float:
        if not self.training:
            return self.s
        theta_med = torch.median(torch.acos(cos_y.detach().clamp(-1.0 + 1e-7, 1.0 - 1e-7))).item()
        scale = math.log(mean_negative_exp) / math.cos(min(math.pi / 4, theta_med))
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"AdaCos's scale became {scale!r} (B_avg={mean_negative_exp!r}, median target angle "
                             f"{theta_med!r} rad); it needs a batch whose negatives sum to more than 1")
        self.s = scale
        self.scale.fill_(scale)
        return scale

    def target_logit(self, cos_y, norms):
        return self.s * cos_y

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.s = float(self.scale)

    def log_stats(self, norms, cos_target):
        """The scale of the last batch."""
        return {"scale": self.s}
