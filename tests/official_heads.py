"""The official implementations' computations, re-derived in this file from reading their code (not copied), as
stateful float64 functions over the layouts they use. tests/losses/test_heads_official.py runs them beside losses/ on
the same weights and batches over several training steps.

Sources (read 2026-12-04; tests/losses/test_heads_official.py names the head each stands for):
- HuangYG123/CurricularFace head/metrics.py @ 68c8727 (FaceX-Zoo head/CurricularFace.py computes the same);
- JDAI-CV/FaceX-Zoo @ 16b793a head/MV_Softmax.py, head/CircleLoss.py, head/AdaCos.py (after 4uiiurz1/pytorch-adacos);
- fdbtrs/ElasticFace utils/losses.py @ 5496ec0 (ElasticArcFace, ElasticCosFace, their plus flag);
- KevinMusgrave/pytorch-metric-learning v2.8.1 losses/subcenter_arcface_loss.py (W is [d, C*k]);
- CVI-SZU/UniFace head.py @ 00ade47 (Unified_Cross_Entropy_Loss).
Each takes the class centres in the official layout ([d, C] columns unless said), the embeddings and labels.
"""
import math

import torch
import torch.nn.functional as F


def _cos_columns(x, kernel):
    """Official style: rows of x and columns of the kernel normalised, cosine clamped to [-1, 1]."""
    return (F.normalize(x, dim=1) @ F.normalize(kernel, dim=0)).clamp(-1, 1)


class CurricularFace:
    def __init__(self, m=0.5, s=64.0):
        self.m, self.s, self.t = m, s, torch.zeros(1, dtype=torch.float64)
        self.threshold, self.mm = math.cos(math.pi - m), math.sin(math.pi - m) * m

    def logits(self, x, kernel, labels):
        cos = _cos_columns(x, kernel)
        target = cos[torch.arange(len(x)), labels].view(-1, 1)
        sin = torch.sqrt(1.0 - target ** 2)
        ctm = target * math.cos(self.m) - sin * math.sin(self.m)
        mask = cos > ctm
        final = torch.where(target > self.threshold, ctm, target - self.mm)
        hard = cos[mask]
        with torch.no_grad():
            self.t = target.mean() * 0.01 + 0.99 * self.t
        cos = cos.clone()
        cos[mask] = hard * (self.t + hard)
        cos = cos.scatter(1, labels.view(-1, 1), final)
        return cos * self.s


class MVSoftmax:
    """FaceX-Zoo's MV_Softmax (one margin for both variants; its weight is [d, C], not clamped)."""

    def __init__(self, is_am, margin=0.35, mv_weight=1.12, scale=32.0):
        self.is_am, self.m, self.t, self.s = is_am, margin, mv_weight, scale

    def logits(self, x, kernel, labels):
        cos = F.normalize(x, dim=1) @ F.normalize(kernel, dim=0)
        gt = cos[torch.arange(len(x)), labels].view(-1, 1)
        if self.is_am:
            mask = cos > gt - self.m
            final = torch.where(gt > self.m, gt - self.m, gt)
        else:
            ctm = gt * math.cos(self.m) - torch.sqrt(1.0 - gt ** 2) * math.sin(self.m)
            mask = cos > ctm
            final = torch.where(gt > 0, ctm, gt)
        hard = cos[mask]
        cos = cos.clone()
        cos[mask] = self.t * hard + self.t - 1.0
        return cos.scatter(1, labels.view(-1, 1), final) * self.s


class CircleLoss:
    def __init__(self, margin=0.25, gamma=256.0):
        self.m, self.gamma = margin, gamma

    def logits(self, x, kernel, labels):
        cos = _cos_columns(x, kernel)
        alpha_p = (1 + self.m - cos.detach()).clamp_min(0)
        alpha_n = (cos.detach() + self.m).clamp_min(0)
        one_hot = torch.zeros_like(cos).scatter_(1, labels.view(-1, 1), 1.0)
        out = one_hot * alpha_p * (cos - (1 - self.m)) + (1 - one_hot) * alpha_n * (cos - self.m)
        return out * self.gamma


class AdaCos:
    """W is [C, d] here (F.linear), s a plain number updated before the batch's output."""

    def __init__(self, num_classes):
        self.s = math.sqrt(2) * math.log(num_classes - 1)

    def logits(self, x, weight, labels):
        cos = F.normalize(x, dim=1) @ F.normalize(weight, dim=1).t()
        theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
        one_hot = torch.zeros_like(cos).scatter_(1, labels.view(-1, 1), 1.0)
        with torch.no_grad():
            b_avg = torch.where(one_hot < 1, torch.exp(self.s * cos), torch.zeros_like(cos)).sum() / len(x)
            theta_med = torch.median(theta[one_hot == 1])
            self.s = float(torch.log(b_avg) / torch.cos(torch.min(math.pi / 4 * torch.ones_like(theta_med),
                                                                     theta_med)))
        return self.s * cos


class ElasticFace:
    """ElasticArcFace / ElasticCosFace; `generator` stands in for the global one the official code draws from."""

    def __init__(self, arc, s, m, std, plus, generator):
        self.arc, self.s, self.m, self.std, self.plus, self.generator = arc, s, m, std, plus, generator

    def logits(self, x, kernel, labels):
        cos = _cos_columns(x, kernel)
        margin = torch.normal(mean=self.m, std=self.std, size=(len(x), 1), generator=self.generator).double()
        m_hot = torch.zeros_like(cos)
        if self.plus:
            with torch.no_grad():
                perm = torch.argsort(cos[torch.arange(len(x)), labels].detach(), descending=True)
                ascending, _ = torch.sort(margin, dim=0)
            m_hot.scatter_(1, labels[:, None], ascending[perm])
        else:
            m_hot.scatter_(1, labels[:, None], margin)
        if self.arc:
            return torch.cos(torch.acos(cos) + m_hot) * self.s
        return (cos - m_hot) * self.s


class SubCenterArcFace:
    """pytorch-metric-learning: W is [d, C*k], column c*k + i is class c's sub-centre i."""

    def __init__(self, k=3, margin=0.5, scale=64.0):
        self.k, self.m, self.s = k, margin, scale

    def logits(self, x, w, labels):
        cos = F.normalize(x, dim=1) @ F.normalize(w, dim=0)
        cos = cos.view(len(x), -1, self.k).max(dim=2).values
        c = cos[torch.arange(len(x)), labels]
        theta = torch.acos(c.clamp(-1, 1))
        modified = torch.where(theta <= math.pi - self.m, torch.cos(theta + self.m), c - self.m * math.sin(self.m))
        one_hot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return (cos + one_hot * (modified - c)[:, None]) * self.s


def uniface_loss(x, weight, bias, labels, m=0.4, s=64.0, lam=1.0):
    """Unified cross-entropy: W is [C, d], bias one learnt scalar; logits clamped to [-s, s]."""
    cos = F.normalize(x, eps=1e-5) @ F.normalize(weight, eps=1e-5).t()
    zp = s * (cos - m) - bias
    zn = s * cos - bias
    p_loss = torch.log(1 + torch.exp(-zp.clamp(min=-s, max=s)))
    n_loss = torch.log(1 + torch.exp(zn.clamp(min=-s, max=s))) * lam
    one_hot = F.one_hot(labels, cos.shape[1]).bool()
    return torch.where(one_hot, p_loss, n_loss).sum(dim=1).mean()
