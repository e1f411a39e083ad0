"""CosFace: additive cosine margin."""
from __future__ import annotations

from . import checks
from .base import MarginHead


class CosFaceHead(MarginHead):
    """Additive cosine margin (CosFace / AM-Softmax): target logit s * (cos theta_y - m). Defaults from CosFace."""

    name = "cosface"

    def __init__(self, num_classes: int, embedding_size: int, *, s: float = 64.0, m: float = 0.35,
                 sample_rate: float = 1.0, centre_init: str = "unit"):
        super().__init__(num_classes, embedding_size, s=s, sample_rate=sample_rate, centre_init=centre_init)
        self.m = checks.real("m", m, low=0.0)

    def target_logit(self, cos_y, norms):
        return self.s * (cos_y - self.m)
