"""Independent float64 reference of every registered head, written from the papers' per-sample formulas.

Deliberately naive (normalise, full cosine matrix, arccos, one target entry replaced, plain cross-entropy)
and sharing no code with losses/, so agreement is evidence, not tautology.

A new head adds here its logits in REFERENCES (for a cosine head: `cosine(target)` with its unscaled target
value), its auxiliary loss in AUXILIARY if it has one, and the parameter settings worth testing in CASES (default:
the defaults). The formula, gradcheck, invariance, numerics and distributed tests iterate over losses.HEADS and
fail, naming the head, when it has no entry in REFERENCES.
"""
import math

import torch
import torch.nn.functional as F

MAG = {"l_a": 1.0, "u_a": 6.0}   # a magnitude band that random test embeddings fall inside and on both sides of


def linear(x, weight, labels, p, buffers):
    """The plain softmax classifier x W^T (a zero-initialised bias adds nothing)."""
    return x @ weight.t()


def cosine(target):
    """Logits s cos(theta_j), with s * target(c, norms, p, buffers) in the own class's column."""
    def logits(x, weight, labels, p, buffers):
        cos = F.normalize(x, dim=1) @ F.normalize(weight, dim=1).t()
        c = cos.gather(1, labels[:, None]).squeeze(1)
        one_hot = F.one_hot(labels, weight.shape[0]).bool()
        return torch.where(one_hot, p["s"] * target(c, x.norm(dim=1), p, buffers)[:, None], p["s"] * cos)
    return logits


def angular(c, m, policy, grad_mode):
    """cos(theta + m) under a theta + m > pi policy; straight-through keeps the value, passes d/dc = 1."""
    theta = torch.acos(c)
    if grad_mode == "straight_through":
        shifted = torch.cos(theta.detach() + m) + (c - c.detach())
    else:
        shifted = torch.cos(theta + m)
    if policy == "easy":
        return torch.where(c > 0, shifted, c)
    if policy == "threshold":
        return torch.where(theta + m < math.pi, shifted, c - m * torch.sin(m))
    return shifted


def mag_margin(norms, p):
    a = norms.clamp(p["l_a"], p["u_a"])
    return (p["u_m"] - p["l_m"]) / (p["u_a"] - p["l_a"]) * (a - p["l_a"]) + p["l_m"]


def mag_g(norms, p):
    a = norms.clamp(p["l_a"], p["u_a"])
    return p["lambda_g"] * (1 / a + a / p["u_a"] ** 2).mean()


def adaface(c, norms, p, buffers):
    m, h, eps = p["m"], p["h"], p["eps"]
    z = ((norms.detach().clamp(0.001, 100) - buffers["batch_mean"]) / (buffers["batch_std"] + eps) * h).clamp(-1, 1)
    theta_m = (torch.acos(c) - m * z).clamp(eps, math.pi - eps)
    return torch.cos(theta_m) - m - m * z


def sphereface(c, norms, p, buffers):
    m, lam = p["m"], p["lam"]
    theta = torch.acos(c)
    k = torch.floor(m * theta / math.pi).detach()
    psi = (-1.0) ** k * torch.cos(m * theta) - 2 * k
    return (lam * c + psi) / (1 + lam)


REFERENCES = {
    "softmax": linear,
    "normface": cosine(lambda c, norms, p, buffers: c),
    "cosface": cosine(lambda c, norms, p, buffers: c - p["m"]),
    "arcface": cosine(lambda c, norms, p, buffers: angular(c, torch.full_like(c, p["m"]), p["theta_policy"],
                                                          p["grad_mode"])),
    "magface": cosine(lambda c, norms, p, buffers: angular(c, mag_margin(norms, p), p["theta_policy"],
                                                          p["grad_mode"])),
    "mag_cosface": cosine(lambda c, norms, p, buffers: c - mag_margin(norms, p)),
    "adaface": cosine(adaface),
    "sphereface": cosine(sphereface),
}
AUXILIARY = {"magface": mag_g, "mag_cosface": mag_g}

CASES = {
    "softmax": [{}, {"bias": True}],
    "cosface": [{}, {"m": 0.2, "s": 30.0}],
    "arcface": [{}, {"theta_policy": "none"}, {"theta_policy": "easy"}, {"grad_mode": "straight_through"}],
    "magface": [MAG, {**MAG, "theta_policy": "none"},
                {**MAG, "theta_policy": "threshold", "grad_mode": "straight_through"}],
    "mag_cosface": [MAG],
    "adaface": [{}, {"h": 2.0}],
    "sphereface": [{}, {"m": 1.7}],
}
# settings under which a head's loss is an exact function of x and W, for gradcheck: AdaFace's norm term is a
# stop-gradient by design, and h = 0 removes it
GRADCHECK = {"adaface": {"h": 0.0}}


def cases(names):
    """(name, params) for every head in `names` and each of its CASES (the defaults if it lists none)."""
    return [(name, params) for name in names for params in CASES.get(name, [{}])]


def reference_loss(name, x, weight, labels, p, buffers=None):
    """(loss, logits) in float64 by the textbook route; p: the head's hparams, buffers: its running statistics."""
    logits = REFERENCES[name](x, weight, labels, p, buffers or {})
    loss = F.cross_entropy(logits, labels)
    if name in AUXILIARY:
        loss = loss + AUXILIARY[name](x.norm(dim=1), p)
    return loss, logits
