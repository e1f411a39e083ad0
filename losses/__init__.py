"""Margin heads for face recognition: interchangeable by name, float32 and NaN-free under mixed precision.

    from losses import build_head, HEADS
    head = build_head("magface", num_classes=C, embedding_size=d, l_m=0.4)
    out = head(embeddings, labels); out.loss.backward()
"""
from .base import HeadOutput, MarginHead
from .magface import FeasibilityWarning, magface_lambda_g_min
from .registry import HEADS, build_head, head_parameters

__all__ = ["HEADS", "build_head", "head_parameters", "HeadOutput", "MarginHead", "FeasibilityWarning",
           "magface_lambda_g_min"]
