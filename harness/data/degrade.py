"""Image degradations with a severity in [0, 1] each, and the ground-truth quality they imply.

quality = prod_k (1 - QUALITY_WEIGHT * severity_k): 1 for a clean image, falling with every degradation.
The severity recorded is the one actually applied (e.g. after rounding the low-resolution size).
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

DEGRADATIONS = ("blur", "noise", "occlusion", "lowres", "jpeg")
QUALITY_WEIGHT = 0.9
MAX_BLUR_SIGMA_AT_64 = 3.0     # pixels at 64 px, scaled with the image size
MAX_NOISE_SIGMA = 0.15         # on the [0, 1] intensity scale
MAX_DOWNSCALE = 4.0            # lowres: down by up to this factor, then back up
MAX_OCCLUDED_AREA = 0.40


def quality_from_severity(severity: np.ndarray) -> np.ndarray:
    return np.prod(1.0 - QUALITY_WEIGHT * np.asarray(severity, dtype=np.float64), axis=-1)


def draw_severities(n: int, gen: torch.Generator, probability: dict) -> torch.Tensor:
    """[n, len(DEGRADATIONS)]: each degradation applied with its probability, severity uniform in (0, 1]."""
    sev = torch.zeros(n, len(DEGRADATIONS))
    for k, name in enumerate(DEGRADATIONS):
        applied = torch.rand(n, generator=gen) < probability.get(name, 0.0)
        sev[:, k] = torch.where(applied, 1.0 - torch.rand(n, generator=gen), torch.zeros(n))
    return sev


def _occlude(img, sev, gen):
    B, _, S, _ = img.shape
    area = 0.04 + (MAX_OCCLUDED_AREA - 0.04) * sev
    aspect = torch.exp(torch.rand(B, generator=gen) - 0.5)
    half_w = (area * aspect).sqrt()          # half-sides in [-1, 1] units: (2 half_w)(2 half_h)/4 = area
    half_h = area / half_w
    cx, cy = torch.rand(B, generator=gen) - 0.5, torch.rand(B, generator=gen) - 0.5
    lin = torch.linspace(-1, 1, S)
    pix = 2.0 / S
    inside_x = (0.5 + (half_w[:, None] - (lin[None] - cx[:, None]).abs()) / pix).clamp(0, 1)
    inside_y = (0.5 + (half_h[:, None] - (lin[None] - cy[:, None]).abs()) / pix).clamp(0, 1)
    mask = (inside_y[:, :, None] * inside_x[:, None, :] * (sev > 0)[:, None, None].float())[:, None]
    colour = torch.rand(B, 3, 1, 1, generator=gen)
    stripes = 0.15 * torch.sin(lin * 25 * torch.rand(B, 1, generator=gen) * math.pi)[:, None, None, :]
    return img + mask * (colour + stripes - img)


def _blur(img, sev):
    B, C, S, _ = img.shape
    sigma = sev * MAX_BLUR_SIGMA_AT_64 * S / 64
    radius = max(1, math.ceil(3 * float(sigma.max())))
    taps = torch.arange(-radius, radius + 1, dtype=img.dtype)
    kernel = torch.exp(-0.5 * (taps[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)                       # sigma ~ 0 -> a delta
    k = kernel.repeat_interleave(C, 0)                                  # [B*C, taps]
    x = F.pad(img.reshape(1, B * C, S, S), (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k[:, None, None, :], groups=B * C)
    x = F.conv2d(x, k[:, None, :, None], groups=B * C)
    return x.reshape(B, C, S, S)


def _lowres(img, sev):
    """Down-then-up sampling; returns the images and the severity of the size actually used."""
    S = img.shape[-1]
    target = torch.clamp(torch.round(S / (1 + (MAX_DOWNSCALE - 1) * sev)), min=4).long()
    out = img.clone()
    for t in torch.unique(target).tolist():
        if t >= S:
            continue
        sel = target == t
        small = F.interpolate(img[sel], size=(t, t), mode="area")
        out[sel] = F.interpolate(small, size=(S, S), mode="bilinear", align_corners=False)
    actual = ((S / target.float() - 1) / (MAX_DOWNSCALE - 1)).clamp(0, 1)
    return out, torch.where(sev > 0, actual, torch.zeros_like(sev))


def _jpeg(img_uint8: np.ndarray, sev: np.ndarray) -> np.ndarray:
    out = img_uint8.copy()
    for i in np.flatnonzero(sev > 0):
        buf = io.BytesIO()
        Image.fromarray(img_uint8[i]).save(buf, format="JPEG", quality=int(round(95 - 85 * sev[i])))
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out


def degrade(img: torch.Tensor, severity: torch.Tensor, gen: torch.Generator):
    """Apply occlusion, blur, low resolution, noise, then JPEG to float images [B, 3, S, S] in [0, 1].
    Returns (uint8 [B, S, S, 3], applied severities [B, K])."""
    sev = severity.clone()
    k = {name: i for i, name in enumerate(DEGRADATIONS)}
    img = _occlude(img, sev[:, k["occlusion"]], gen)
    if bool((sev[:, k["blur"]] > 0).any()):
        img = _blur(img, sev[:, k["blur"]])
    img, sev[:, k["lowres"]] = _lowres(img, sev[:, k["lowres"]])
    img = img + MAX_NOISE_SIGMA * sev[:, k["noise"]][:, None, None, None] * torch.randn(img.shape, generator=gen)
    out = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    if bool((sev[:, k["jpeg"]] > 0).any()):
        out = _jpeg(out, sev[:, k["jpeg"]].numpy())
    return out, sev
