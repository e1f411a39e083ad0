"""Cosine classifier + target-column margin + cross-entropy as one autograd function.

Why fused: the naive graph (normalise W, matmul, one-hot mask, margin on a [B, C] copy, log_softmax) keeps
several [B, C] and [C, d] temporaries alive. Here the forward keeps exactly one [B, C] buffer (the logits,
which are also handed to the caller), the backward allocates one more (the gradient), and the class centres
are normalised implicitly by scaling logit columns, so no normalised copy of W is ever stored. The margin
touches only the B target entries; its derivative comes from autograd on [B]-sized tensors, so a head only
writes the formula `target_fn(cos_y, norms) -> scaled target logit`.
"""
from __future__ import annotations

import torch

ROW_CHUNK = 64  # rows per logsumexp chunk: bounds the transient exp buffer to ROW_CHUNK x C


def _row_logsumexp(logits: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.logsumexp(chunk, dim=1) for chunk in logits.split(ROW_CHUNK)])


class FusedMarginCE(torch.autograd.Function):
    """loss_i = logsumexp_j(z_ij) - z_iy, where z_ij = s * cos(x_i, W_j) and z_iy = target_fn(cos_iy, norm_i).

    Inputs: x_unit [B, d] (unit embeddings), norms [B], weight [K, d] (raw centres), labels [B] in [0, K),
    s (float) and target_fn.
    Outputs: per-sample loss [B], logits [B, K] (with the margin), cos_y [B] (no margin; not differentiable).
    """

    @staticmethod
    def forward(ctx, x_unit, norms, weight, labels, s, target_fn):
        with torch.autocast(device_type=x_unit.device.type, enabled=False):
            inv_wnorm = torch.linalg.vector_norm(weight, dim=1).clamp_min(1e-12).reciprocal()
            logits = torch.mm(x_unit, weight.t())              # [B, K]: the one big buffer
            logits.mul_(inv_wnorm * s)                          # columns -> s * cos
            idx = labels[:, None]
            cos_y = logits.gather(1, idx).squeeze(1) / s
            with torch.enable_grad():
                c = cos_y.detach().requires_grad_(True)
                n = norms.detach().requires_grad_(True)
                target = target_fn(c, n)
            logits.scatter_(1, idx, target.detach()[:, None])
            lse = _row_logsumexp(logits)
            loss = lse - target.detach()
        ctx.save_for_backward(x_unit, weight, labels, logits, lse, inv_wnorm, cos_y)
        ctx.margin_graph = (c, n, target)
        ctx.s = s
        ctx.mark_non_differentiable(logits, cos_y)
        ctx.set_materialize_grads(False)  # no zero-filled [B, K] gradient for the logits output
        return loss, logits, cos_y

    @staticmethod
    def backward(ctx, grad_loss, _grad_logits, _grad_cos):
        x_unit, weight, labels, logits, lse, inv_wnorm, cos_y = ctx.saved_tensors
        if grad_loss is None:
            return None, None, None, None, None, None
        c, n, target = ctx.margin_graph
        s = ctx.s
        idx = labels[:, None]
        with torch.autocast(device_type=x_unit.device.type, enabled=False):
            grad = torch.sub(logits, lse[:, None]).exp_()              # softmax, the second [B, K] buffer
            grad_target = (grad.gather(1, idx).squeeze(1) - 1.0) * grad_loss
            dc, dn = torch.autograd.grad(target, (c, n), grad_target, allow_unused=True, retain_graph=True)
            dc = torch.zeros_like(c) if dc is None else dc
            dn = None if dn is None else dn.to(n.dtype)
            # gradient w.r.t. the cosine matrix, scaled by 1/||W_j||: H = dL/dcos * inv_wnorm
            grad.mul_(grad_loss[:, None] * s)
            grad.scatter_(1, idx, dc[:, None])
            grad.mul_(inv_wnorm)
            grad_x = torch.mm(grad, weight) if ctx.needs_input_grad[0] else None
            grad_w = None
            if ctx.needs_input_grad[2]:
                grad_w = torch.mm(grad.t(), x_unit)
                # d/dW_j of W_j/||W_j|| removes the radial part: r_j * sum_b H_bj cos_bj * W_j. The target column
                # holds the margin logit, so its product is overwritten with the plain cosine's; scatter_ writes one
                # entry per row (no accumulation, unlike index_add_, whose CUDA atomics add duplicate labels in
                # varying order), and the column sum is a deterministic reduction.
                h_y = grad.gather(1, idx)
                colsum = grad.mul_(logits).scatter_(1, idx, h_y * (cos_y[:, None] * s)).sum(dim=0).div_(s)
                grad_w.addcmul_(weight, (colsum * inv_wnorm)[:, None], value=-1.0)
        return grad_x, dn, grad_w, None, None, None
