"""Vectorised procedural renderer of face-like images: identity traits + per-image nuisance -> RGB floats.

Each identity is drawn once per expression variant as a frontal RGBA "canonical" face: anti-aliased soft
shapes (a one-pixel ramp at each edge) composited in painter's order: hair, face, fringe, beard, eyes, irises,
brows, nose, mouth, mole, glasses. Each image then picks a variant and is placed by one affine warp (pose)
over its own background and lit. Rendering per identity rather than per image makes 50,000 images cheap.
"""
from __future__ import annotations

import math

import torch

# identity traits: name -> (low, high) for uniform draws; colours are drawn separately
TRAIT_RANGES = {
    "face_w": (0.50, 0.66), "face_h": (0.66, 0.84), "hair_volume": (0.04, 0.20), "fringe_y": (-0.58, -0.28),
    "fringe_amp": (0.0, 0.10), "fringe_freq": (2.0, 7.0), "side_len": (-0.15, 0.55),
    "eye_dx": (0.16, 0.27), "eye_y": (-0.16, -0.02), "eye_w": (0.065, 0.11), "eye_h": (0.032, 0.06),
    "iris_r": (0.45, 0.8), "brow_dy": (0.06, 0.13), "brow_angle": (-0.35, 0.35), "brow_thick": (0.014, 0.035),
    "brow_w": (0.8, 1.4), "nose_len": (0.10, 0.24), "nose_w": (0.035, 0.08), "mouth_y": (0.24, 0.40),
    "mouth_w": (0.11, 0.22), "lip_thick": (0.015, 0.04), "beard": (0.0, 1.0), "glasses": (0.0, 1.0),
    "mole": (0.0, 1.0), "mole_x": (-0.35, 0.35), "mole_y": (-0.1, 0.45), "mole_r": (0.015, 0.035),
}
SKIN_LIGHT, SKIN_DARK = (0.96, 0.80, 0.69), (0.33, 0.21, 0.14)
HAIR_PALETTE = ((0.08, 0.06, 0.05), (0.35, 0.22, 0.12), (0.80, 0.66, 0.38), (0.62, 0.25, 0.10),
                (0.62, 0.62, 0.64), (0.22, 0.14, 0.10))
IRIS_PALETTE = ((0.25, 0.45, 0.75), (0.30, 0.55, 0.35), (0.40, 0.25, 0.12), (0.12, 0.08, 0.06))


def draw_identities(n: int, gen: torch.Generator) -> dict:
    """Random identity traits: each a tensor [n] (or [n, 3] for colours)."""
    traits = {k: lo + (hi - lo) * torch.rand(n, generator=gen) for k, (lo, hi) in TRAIT_RANGES.items()}
    tone = torch.rand(n, 1, generator=gen)
    traits["skin"] = (torch.tensor(SKIN_LIGHT) * (1 - tone) + torch.tensor(SKIN_DARK) * tone
                      + 0.03 * torch.randn(n, 3, generator=gen)).clamp(0, 1)
    hair = torch.tensor(HAIR_PALETTE)[torch.randint(len(HAIR_PALETTE), (n,), generator=gen)]
    traits["hair"] = (hair + 0.05 * torch.randn(n, 3, generator=gen)).clamp(0, 1)
    iris = torch.tensor(IRIS_PALETTE)[torch.randint(len(IRIS_PALETTE), (n,), generator=gen)]
    traits["iris"] = (iris + 0.05 * torch.randn(n, 3, generator=gen)).clamp(0, 1)
    traits["lips"] = (traits["skin"] * torch.tensor([0.85, 0.55, 0.55]) + 0.04 * torch.randn(n, 3, generator=gen)
                      ).clamp(0, 1)
    traits["frame"] = torch.rand(n, 3, generator=gen) * 0.6
    return traits


EXPRESSIONS = [(smile, eye_open, brow) for smile in (-0.05, 0.0, 0.05) for eye_open, brow in ((1.0, 0.0), (0.55, 0.02))]


def draw_nuisance(n: int, gen: torch.Generator, pose: float = 1.0, light: float = 1.0,
                  expression: float = 1.0) -> dict:
    """Per-image pose (roll, yaw, scale, shift), illumination, expression variant and background colour."""
    r = lambda: torch.randn(n, generator=gen)  # noqa: E731
    u = lambda: torch.rand(n, generator=gen)  # noqa: E731
    neutral = torch.full((n,), EXPRESSIONS.index((0.0, 1.0, 0.0)))
    varied = torch.randint(len(EXPRESSIONS), (n,), generator=gen)
    return {
        "roll": 0.15 * pose * r(), "yaw": (0.25 * pose * r()).clamp(-0.7, 0.7), "scale": 1 + 0.06 * pose * r(),
        "tx": 0.05 * pose * r(), "ty": 0.05 * pose * r(),
        "gain": 1 + light * (0.45 * u() - 0.25), "light_angle": 2 * math.pi * u(), "light_strength": 0.4 * light * u(),
        "expression": torch.where(u() < expression, varied, neutral),
        "background": torch.rand(n, 3, generator=gen) * 0.8 + 0.1,
    }


def _ramp(signed, pixel):
    """Anti-aliased coverage from a signed distance (positive inside), one pixel wide."""
    return (0.5 + signed / pixel).clamp_(0, 1)


def _ellipse(x, y, cx, cy, rx, ry, pixel, angle=None):
    dx, dy = x - cx[:, None, None], y - cy[:, None, None]
    if angle is not None:
        c, s = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    rx, ry = rx[:, None, None], ry[:, None, None]
    d2 = (dx / rx).square_().add_((dy / ry).square_())
    # (1 - d^2)/2 equals 1 - d to first order at the edge d = 1: the ramp stays one pixel wide, no sqrt
    return _ramp(d2.neg_().add_(1).mul_(0.5 * torch.minimum(rx, ry)), pixel)


def _paint(img, mask, colour):
    """RGBA img [B, 4, H, W] <- paint `colour` with coverage `mask` over it. Starting from zeros, RGB stays
    premultiplied by alpha, so resampling later blends edges correctly."""
    img[:, :3].add_(mask[:, None] * (colour[:, :, None, None] - img[:, :3]))
    img[:, 3].add_(mask * (1 - img[:, 3]))


def render_canonical(traits: dict, expression: int, size: int) -> torch.Tensor:
    """Frontal, unlit face of each identity with one expression variant: RGBA [B, 4, size, size] in [0, 1]."""
    smile, eye_open, brow_raise = EXPRESSIONS[expression]
    t = traits
    B = t["face_w"].shape[0]
    pix = 2.0 / size
    grid = torch.linspace(-1 + pix / 2, 1 - pix / 2, size)
    x, y = grid[None, None, :].expand(B, size, size), grid[None, :, None].expand(B, size, size)
    zero = torch.zeros(B)
    img = torch.zeros(B, 4, size, size)
    hair_r = t["hair_volume"]
    hair = _ellipse(x, y, zero, zero - 0.02, t["face_w"] + hair_r, t["face_h"] + hair_r, pix)
    _paint(img, hair * _ramp(t["side_len"][:, None, None] - y, pix), t["hair"])
    _paint(img, _ellipse(x, y, zero, zero + 0.04, t["face_w"], t["face_h"], pix), t["skin"])
    inside_face = _ellipse(x, y, zero, zero + 0.04, t["face_w"] * 1.02, t["face_h"] * 1.02, pix)
    fringe_edge = t["fringe_y"][:, None, None] + t["fringe_amp"][:, None, None] * torch.sin(
        t["fringe_freq"][:, None, None] * x * math.pi)
    _paint(img, inside_face * _ramp(fringe_edge - y, pix), t["hair"])
    beard = (t["beard"] > 0.75).float()[:, None, None]
    _paint(img, inside_face * _ramp(y - (t["mouth_y"][:, None, None] - 0.04), pix) * beard * 0.85, t["hair"] * 0.8)

    eye_y = t["eye_y"] - brow_raise * 0.3
    eye_h = t["eye_h"] * eye_open
    white, black = torch.full((B, 3), 0.95), torch.full((B, 3), 0.03)
    for side in (-1.0, 1.0):
        ex = side * t["eye_dx"]
        eye = _ellipse(x, y, ex, eye_y, t["eye_w"], eye_h, pix)
        _paint(img, eye, white)
        iris_r = t["eye_w"] * 0.5 * t["iris_r"]
        iris = _ellipse(x, y, ex, eye_y, iris_r, iris_r, pix) * eye
        _paint(img, iris, t["iris"])
        _paint(img, _ellipse(x, y, ex, eye_y, iris_r * 0.45, iris_r * 0.45, pix) * eye, black)
        brow_y = eye_y - t["brow_dy"] - brow_raise
        _paint(img, _ellipse(x, y, ex, brow_y, t["eye_w"] * t["brow_w"], t["brow_thick"], pix,
                             angle=-side * t["brow_angle"]), t["hair"] * 0.7)
    nose_y = eye_y + 0.05 + t["nose_len"] / 2
    _paint(img, _ellipse(x, y, zero, nose_y, t["nose_w"] * 0.5, t["nose_len"] / 2, pix) * 0.35, t["skin"] * 0.6)
    for side in (-1.0, 1.0):
        _paint(img, _ellipse(x, y, side * t["nose_w"] * 0.6, nose_y + t["nose_len"] / 2,
                             t["nose_w"] * 0.28, t["nose_w"] * 0.18, pix), t["skin"] * 0.35)
    curve = t["mouth_y"][:, None, None] - smile * 0.5 - (smile * 12) * x**2
    lips = (_ramp(t["lip_thick"][:, None, None] - (y - curve).abs(), pix)
            * _ramp(t["mouth_w"][:, None, None] - x.abs(), pix))
    _paint(img, lips, t["lips"])
    mole = (t["mole"] > 0.5).float()[:, None, None]
    _paint(img, _ellipse(x, y, t["mole_x"], t["mole_y"], t["mole_r"], t["mole_r"], pix) * mole, t["skin"] * 0.3)
    glasses = (t["glasses"] > 0.8).float()[:, None, None]
    for side in (-1.0, 1.0):
        rim_out = _ellipse(x, y, side * t["eye_dx"], t["eye_y"], t["eye_w"] * 1.5, t["eye_w"] * 1.1, pix)
        rim_in = _ellipse(x, y, side * t["eye_dx"], t["eye_y"], t["eye_w"] * 1.5 - 0.02, t["eye_w"] * 1.1 - 0.02, pix)
        _paint(img, (rim_out - rim_in).clamp(0, 1) * glasses, t["frame"])
    return img.clamp_(0, 1)


def compose(canonical: torch.Tensor, nuisance: dict) -> torch.Tensor:
    """Place canonical RGBA faces [B, 4, S, S] with each image's pose over its background, then light them.

    Pose is an affine warp: roll, scale, shift, and yaw as a horizontal squash plus a sideways shift.
    """
    n = nuisance
    B, _, S, _ = canonical.shape
    c, s = torch.cos(n["roll"]), torch.sin(n["roll"])
    yaw = torch.sin(n["yaw"])
    sx = (1 - 0.35 * yaw.abs()) * n["scale"]
    sy = n["scale"]
    # affine_grid maps output coords to input coords: the inverse of rotate(scale(face)) + shift
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = c / sx, s / sx
    theta[:, 1, 0], theta[:, 1, 1] = -s / sy, c / sy
    shift_x, shift_y = n["tx"] + 0.15 * yaw, n["ty"]
    theta[:, 0, 2] = -(c * shift_x + s * shift_y) / sx
    theta[:, 1, 2] = -(-s * shift_x + c * shift_y) / sy
    grid = torch.nn.functional.affine_grid(theta, [B, 4, S, S], align_corners=False)
    face = torch.nn.functional.grid_sample(canonical, grid, mode="bilinear", padding_mode="zeros",
                                           align_corners=False)
    lin = torch.linspace(-1, 1, S)
    u, v = lin[None, None, :], lin[None, :, None]
    background = n["background"][:, :, None, None] * (1 + 0.15 * v[:, None])
    img = face[:, :3] + (1 - face[:, 3:]) * background   # canonical RGB is premultiplied by alpha
    shade = 1 + n["light_strength"][:, None, None] * (torch.cos(n["light_angle"])[:, None, None] * u
                                                      + torch.sin(n["light_angle"])[:, None, None] * v)
    return img.mul_((n["gain"][:, None, None] * shade)[:, None]).clamp_(0, 1)
