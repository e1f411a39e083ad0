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


def cosines(x, weight, k=1):
    """[B, C] cosines to every class: the max over each class's k consecutive rows of `weight`."""
    cos = F.normalize(x, dim=1) @ F.normalize(weight, dim=1).t()
    return cos.view(len(x), -1, k).max(dim=2).values if k > 1 else cos


def own_column(cos, labels, target, others):
    """target [B] in each row's own column, `others` [B, C] elsewhere."""
    one_hot = F.one_hot(labels, cos.shape[1]).bool()
    return torch.where(one_hot, target[:, None], others)


def curricularface(x, weight, labels, p, buffers):
    cos = cosines(x, weight)
    c = cos.gather(1, labels[:, None]).squeeze(1)
    hard = cos > torch.cos(torch.acos(c) + p["m"])[:, None]
    t = buffers["t"]
    negatives = torch.where(hard, cos * (t + cos), cos)
    return p["s"] * own_column(cos, labels, angular(c, torch.full_like(c, p["m"]), p["theta_policy"],
                                                    p["grad_mode"]), negatives)


def mv_softmax(x, weight, labels, p, buffers):
    cos = cosines(x, weight)
    c = cos.gather(1, labels[:, None]).squeeze(1)
    m, t = p["m"], p["t"]
    if p["target"] == "am":
        boundary = c - m
        target = torch.where(c > m, c - m, c) if p["theta_policy"] == "easy" else c - m
    else:
        boundary = torch.cos(torch.acos(c) + m)
        target = angular(c, torch.full_like(c, m), p["theta_policy"], p["grad_mode"])
    negatives = torch.where(cos > boundary[:, None], t * cos + t - 1, cos)
    return p["s"] * own_column(cos, labels, target, negatives)


def circleloss(x, weight, labels, p, buffers):
    cos = cosines(x, weight)
    c = cos.gather(1, labels[:, None]).squeeze(1)
    m, gamma = p["m"], p["gamma"]
    target = torch.relu(1 + m - c).detach() * (c - (1 - m))
    negatives = torch.relu(cos + m).detach() * (cos - m)
    return gamma * own_column(cos, labels, target, negatives)


def subcenter_arcface(x, weight, labels, p, buffers):
    cos = cosines(x, weight, p["k"])
    c = cos.gather(1, labels[:, None]).squeeze(1)
    return p["s"] * own_column(cos, labels, angular(c, torch.full_like(c, p["m"]), p["theta_policy"],
                                                    p["grad_mode"]), cos)


def adacos(x, weight, labels, p, buffers):
    return buffers["scale"].to(x.dtype) * cosines(x, weight)


def uniface_loss(logits, labels, p, state):
    """Mean over the batch of softplus(-(z_y - b)) + lam * sum_{j != y} softplus(z_j - b), z - b clamped."""
    z = logits - state.get("loss_bias", p["bias_init"])
    if p["clamp"]:
        z = z.clamp(-p["s"], p["s"])
    one_hot = F.one_hot(labels, logits.shape[1]).bool()
    per_class = torch.where(one_hot, F.softplus(-z), p["lam"] * F.softplus(z))
    return per_class.sum(dim=1).mean()


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
    "curricularface": curricularface,
    "mv_softmax": mv_softmax,
    "circleloss": circleloss,
    "subcenter_arcface": subcenter_arcface,
    "adacos": adacos,
    # evaluation mode: every sample gets the mean margin m (training draws them; tests/losses/test_heads_field.py)
    "elasticface_arc": cosine(lambda c, norms, p, buffers: angular(c, torch.full_like(c, p["m"]),
                                                                   p["theta_policy"], p["grad_mode"])),
    "elasticface_cos": cosine(lambda c, norms, p, buffers: c - p["m"]),
    "uniface": cosine(lambda c, norms, p, buffers: c - p["m"]),
}
LOSSES = {"uniface": uniface_loss}   # heads whose loss is not softmax cross-entropy over the logits
# running state set before a comparison, so the formula is tested away from its starting value
STATE = {"curricularface": {"t": 0.3}, "adacos": {"scale": 11.0}}
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
    "curricularface": [{}, {"theta_policy": "none"}],
    "mv_softmax": [{}, {"target": "am", "theta_policy": "none"}, {"target": "arc"},
                   {"target": "arc", "theta_policy": "threshold", "t": 1.3}],
    "circleloss": [{}, {"m": 0.4, "gamma": 64.0}],
    "subcenter_arcface": [{}, {"k": 1}, {"k": 2, "theta_policy": "easy"}],
    "elasticface_arc": [{}, {"theta_policy": "threshold"}],
    "uniface": [{}, {"clamp": False, "lam": 0.5}, {"bias_init": 2.0}],
}
# settings under which a head's loss is an exact function of x and W, for gradcheck: AdaFace's norm term is a
# stop-gradient by design, and h = 0 removes it
GRADCHECK = {"adaface": {"h": 0.0}}
# heads whose gradient is not the derivative of their loss under any setting: CircleLoss's weights alpha_p and
# alpha_n are stop-gradients by design (the reference formula, which detaches them too, checks its gradient)
NO_GRADCHECK = {"circleloss"}


def cases(names):
    """(name, params) for every head in `names` and each of its CASES (the defaults if it lists none)."""
    return [(name, params) for name in names for params in CASES.get(name, [{}])]


def reference_loss(name, x, weight, labels, p, buffers=None):
    """(loss, logits) in float64 by the textbook route; p: the head's hparams, buffers: its running statistics."""
    logits = REFERENCES[name](x, weight, labels, p, buffers or {})
    loss = LOSSES[name](logits, labels, p, buffers or {}) if name in LOSSES else F.cross_entropy(logits, labels)
    if name in AUXILIARY:
        loss = loss + AUXILIARY[name](x.norm(dim=1), p)
    return loss, logits
