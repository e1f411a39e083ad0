"""Independent float64 reference of every head, written from the papers' per-sample formulas.

Deliberately naive (normalise, full cosine matrix, arccos, one target entry replaced, plain cross-entropy)
and sharing no code with losses/, so agreement is evidence, not tautology.
"""
import math

import torch
import torch.nn.functional as F


def target_angle_form(name, c, norms, p, stats=None):
    """Unscaled target value for each head; c = cos theta_y (float64, no clamping needed away from +-1)."""
    theta = torch.acos(c)
    if name == "normface":
        return c
    if name == "cosface":
        return c - p.get("m", 0.35)
    if name in ("arcface", "magface"):
        if name == "arcface":
            m = torch.full_like(c, p.get("m", 0.5))
            policy = p.get("theta_policy", "threshold")
        else:
            a = norms.clamp(p["l_a"], p["u_a"])
            m = (p["u_m"] - p["l_m"]) / (p["u_a"] - p["l_a"]) * (a - p["l_a"]) + p["l_m"]
            policy = p.get("theta_policy", "easy")
        if p.get("grad_mode") == "straight_through":
            shifted = torch.cos(theta.detach() + m) + (c - c.detach())
        else:
            shifted = torch.cos(theta + m)
        if policy == "easy":
            return torch.where(c > 0, shifted, c)
        if policy == "threshold":
            return torch.where(theta + m < math.pi, shifted, c - m * torch.sin(m))
        return shifted
    if name == "mag_cosface":
        a = norms.clamp(p["l_a"], p["u_a"])
        return c - ((p["u_m"] - p["l_m"]) / (p["u_a"] - p["l_a"]) * (a - p["l_a"]) + p["l_m"])
    if name == "adaface":
        m, h, eps = p.get("m", 0.4), p.get("h", 0.333), p.get("eps", 1e-3)
        mean, std = stats
        z = ((norms.detach().clamp(0.001, 100) - mean) / (std + eps) * h).clamp(-1, 1)
        theta_m = (theta - m * z).clamp(eps, math.pi - eps)
        return torch.cos(theta_m) - m - m * z
    if name == "sphereface":
        m, lam = p.get("m", 4.0), p.get("lam", 5.0)
        k = torch.floor(m * theta / math.pi).detach()
        psi = (-1.0) ** k * torch.cos(m * theta) - 2 * k
        return (lam * c + psi) / (1 + lam)
    raise KeyError(name)


def reference_loss(name, x, weight, labels, p, stats=None):
    """(loss, logits) in float64 by the textbook route."""
    norms = x.norm(dim=1)
    if name == "softmax":
        logits = x @ weight.t()
        return F.cross_entropy(logits, labels), logits
    s = p.get("s", 64.0)
    cos = F.normalize(x, dim=1) @ F.normalize(weight, dim=1).t()
    c = cos.gather(1, labels[:, None]).squeeze(1)
    target = target_angle_form(name, c, norms, p, stats)
    one_hot = F.one_hot(labels, weight.shape[0]).bool()
    logits = torch.where(one_hot, s * target[:, None], s * cos)
    loss = F.cross_entropy(logits, labels)
    if name in ("magface", "mag_cosface"):
        a = norms.clamp(p["l_a"], p["u_a"])
        loss = loss + p["lambda_g"] * (1 / a + a / p["u_a"] ** 2).mean()
    return loss, logits
