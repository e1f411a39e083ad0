"""The classifier every head shares: cosine (or linear) logits, the head's formulas, the loss, as one autograd function.

Why fused: the naive graph (normalise W, matmul, one-hot mask, margin on a [B, C] copy, log_softmax) keeps
several [B, C] and [C, d] temporaries alive. Here the forward keeps exactly one [B, C] buffer (the logits,
which are also handed to the caller), the backward allocates one more (the gradient), and the class centres
are normalised implicitly by scaling logit columns, so no normalised copy of W is ever stored. Everything else
works on row chunks (ROW_CHUNK x C transients) or on [B]-sized tensors.

What a head may ask for (a `Recipe`, built by MarginHead.recipe()):
- its target logit `target_fn(cos_y, norms)`; its derivative comes from autograd on [B]-sized tensors;
- reshaped negatives `negative_fn(cos, cos_y, target)` with their slope d logit / d cos
  `negative_slope(cos, cos_y, target)` (CurricularFace, MV-Softmax, CircleLoss); cos_y [r, 1] is the sample's
  target cosine and target [r, 1] its margin-applied target logit, both detached: they enter the negatives only
  through masks or detached weights (as in every official implementation), so no gradient flows from a negative
  to the target. The slope is read off the reshaped logits (`slope_of_logits`) wherever the head can invert its
  formula, with one byte per logit (`negative_code`, kept from the forward: the branch an entry took, the sign of
  a root) for what the logit alone does not tell: MV-Softmax (its branches' logits never overlap; no code),
  CurricularFace and CircleLoss (a quadratic in cos: the code holds the branch and the root's sign). A head that
  cannot invert gets the cosines recomputed once into the backward's gradient buffer (one extra matmul) instead
  of a second [B, C] float buffer kept alive;
- K centres per class (`k`, Sub-center ArcFace): the class cosine is the max over its K centres (ties: the first
  centre), taken row chunk by row chunk, so only the [B, C] maxima and a uint8 index stay alive;
- a per-batch scale (`rescale(mean_negative_exp, cos_y) -> s`, AdaCos): the cosines are known before any scale;
- a loss other than softmax cross-entropy (`lam`: UniFace's sigmoid per class with a learnt bias b,
  softplus(b - z_y) + lam * sum_{j != y} softplus(z_j - b), with z - b clamped to [-clamp, clamp] first when
  `sigmoid_clamp` is set, as the official code does: no gradient beyond it);
- `observe(cos_y)`: running statistics of the target cosines, updated before the target logit (CurricularFace's t).

The same function runs sharded over ranks (losses/distributed.py): `reduce` says how the class dimension is
reduced (LocalReduce here: nothing to reduce; GroupReduce there: all-reduce), and `col` holds each row's target
column in this process's block of classes, -1 where another rank owns it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .branchfree import above, at_most, select

ROW_CHUNK = 64  # rows per chunk: bounds every transient to ROW_CHUNK x C
CHUNK_ELEMENTS = 2**18   # the chunked paths' elementwise passes: about 1 MB per temporary, several alive at once


def chunk_rows(columns: int) -> int:
    """Rows per chunk of the chunked paths (reshaped negatives, sub-centres): a head's formula keeps several
    temporaries of a chunk alive, so a chunk holds about CHUNK_ELEMENTS values (at most ROW_CHUNK rows) and the
    temporaries stay a small share of the one [B, C] buffer."""
    return max(1, min(ROW_CHUNK, CHUNK_ELEMENTS // max(columns, 1)))
NORM_EPS = 1e-12


@dataclass(frozen=True)
class Recipe:
    """What one head asks of the classifier for one batch (see the module docstring)."""

    name: str
    s: float                              # the scale (before a per-batch rescale); 1 for the linear softmax
    target_fn: Callable | None            # None: the linear softmax classifier (logits x W^T + b)
    negative_fn: Callable | None = None
    negative_slope: Callable | None = None
    slope_of_logits: bool = False         # negative_slope reads the reshaped logits, not the cosines: no recompute
    negative_code: Callable | None = None  # (cos, cos_y, target) -> int8/uint8: what the slope needs beside the logit
    rescale: Callable | None = None
    k: int = 1
    lam: float | None = None              # None: softmax cross-entropy; a float: UniFace's sigmoid loss
    sigmoid_clamp: float | None = None
    observe: Callable | None = None


class LocalReduce:
    """One process holds every class: reductions over classes are the identity."""

    def sum_(self, t):
        return t

    def max_(self, t):
        return t

    def logsumexp(self, logits):
        return torch.cat([torch.logsumexp(chunk, dim=1) for chunk in logits.split(ROW_CHUNK)])


def owned_entries(col):
    """(rows, cols) of the target entries this process holds."""
    rows = (col >= 0).nonzero().squeeze(1)
    return rows, col[rows]


def _chunk_targets(rows, cols, start, end):
    """The target entries of row chunk [start, end), as (row within the chunk, column)."""
    inside = (rows >= start) & (rows < end)
    return rows[inside] - start, cols[inside]


def cosine_logits(x, weight, inv_wnorm, scale, k):
    """[B, K] scale * max over each class's k centres of cos(x, W), and the uint8 index of that centre (None for
    k = 1). With k > 1 one matmul per centre index j (the rows c*k + j of W, read in place as a strided matrix), so
    every elementwise pass runs on contiguous [B, K] tensors."""
    if k == 1:
        return torch.mm(x, weight.t()).mul_(inv_wnorm * scale), None
    centres, inv = _by_centre(weight, inv_wnorm * scale, k)
    best = torch.mm(x, centres[:, 0].t())
    chosen = torch.zeros_like(best)
    for j in range(1, k):
        _keep_larger_(best, chosen, torch.mm(x, centres[:, j].t()), inv, j)
    return best, chosen.to(torch.uint8)


def _by_centre(weight, inv, k):
    """weight [k*K, d] as [K, k, d] (class c's centres in rows c*k ... c*k + k - 1) and inv [k*K] as k contiguous
    [K] rows."""
    classes = weight.shape[0] // k
    return weight.view(classes, k, -1), inv.view(classes, k).t().contiguous()


def _keep_larger_(best, chosen, candidate, inv, j):
    """candidate <- candidate * inv[j] (and, for j = 1, best <- best * inv[0]: the products arrive unscaled); then
    where candidate > best (strictly: ties keep the first centre) best <- candidate, chosen <- j. Row chunk by row
    chunk, so each chunk's passes run in cache, with branch-free selections (losses/branchfree.py)."""
    step = chunk_rows(best.shape[1])
    for start in range(0, best.shape[0], step):
        b, c, index = best[start:start + step], candidate[start:start + step], chosen[start:start + step]
        if j == 1:
            b.mul_(inv[0])
        c.mul_(inv[j])
        better = above(c, b)
        b.copy_(select(better, c, b))
        index.addcmul_(better, index.neg().add_(float(j)))     # exact: index + 1 * (j - index) = j


def _mean_negative_exp(cos, s, rows, cols, reduce):
    """(1/B) sum_i sum_{j != y_i} exp(s cos_ij) over the global batch: AdaCos's B_avg."""
    total = sum(torch.exp(chunk * s).sum() for chunk in cos.split(ROW_CHUNK)).reshape(1)
    total = total - torch.exp(cos[rows, cols] * s).sum()
    return float(reduce.sum_(total)) / cos.shape[0]


def _best_other(cos, rows, cols, reduce):
    """Per row, the largest cosine to another class (before any reshaping): what the training accuracy uses. The
    target entries are set to -inf for it; the caller overwrites them with the target logits afterwards."""
    cos[rows, cols] = float("-inf")
    return reduce.max_(cos.max(dim=1).values)


def _reshape_negatives(cos, cos_y, target, recipe):
    """cos -> the head's negative logits, in place, chunk by chunk; returns the head's code of each entry (a
    one-byte integer [B, K], read by its slope in the backward), or None for a head without one."""
    code = None
    step = chunk_rows(cos.shape[1])
    for start in range(0, cos.shape[0], step):
        rows = slice(start, start + step)
        args = (cos[rows], cos_y[rows, None], target[rows, None])
        if recipe.negative_code is not None:
            piece = recipe.negative_code(*args)
            if code is None:
                code = torch.empty(cos.shape, dtype=piece.dtype, device=cos.device)
            code[rows] = piece
        cos[rows] = recipe.negative_fn(*args)
    return code


def _check_reshaped(loss, recipe):
    """Finite cosines and a finite target give a finite loss unless the head's negatives are not finite."""
    bad = ~torch.isfinite(loss)
    if bad.any():
        rows = bad.nonzero().squeeze(1).tolist()
        raise ValueError(f"head {recipe.name!r}: its negative logits are not finite for finite cosines "
                         f"(rows {rows[:5]}{' ...' if len(rows) > 5 else ''}); check its parameters")


def _clamped(z, limit):
    return z if limit is None else z.clamp(-limit, limit)


def _sigmoid_loss(logits, target, bias, recipe, rows, cols, reduce):
    """UniFace: softplus(b - z_y) + lam * sum_{j != y} softplus(z_j - b), per row (z - b clamped, see Recipe)."""
    limit = recipe.sigmoid_clamp
    negatives = torch.cat([F.softplus(_clamped(chunk - bias, limit)).sum(dim=1) for chunk in logits.split(ROW_CHUNK)])
    negatives[rows] -= F.softplus(_clamped(target[rows] - bias, limit))
    return F.softplus(-_clamped(target - bias, limit)) + recipe.lam * reduce.sum_(negatives)


def _sigmoid_slope(z, limit):
    """d softplus(clamp(z)) / dz: sigmoid(z) inside the clamp, 0 beyond it."""
    slope = torch.sigmoid(z)
    return slope if limit is None else slope.mul_(at_most(z.abs(), limit))


class MarginCE(torch.autograd.Function):
    """Inputs: x [B, d] (unit embeddings for cosine heads, raw for the linear softmax), norms [B], weight [k*K, d],
    bias [K] or None (linear softmax), loss_bias (0-d, UniFace's b) or None, col [B], recipe, reduce.
    Outputs: per-sample loss [B], logits [B, K] (what the loss saw), cos_y [B] (no margin), plain target logit
    [B] (s * cos_y), best other plain logit [B] (reshaping heads; else empty), the scale used (0-d)."""

    @staticmethod
    def forward(ctx, x, norms, weight, bias, loss_bias, col, recipe, reduce):
        with torch.autocast(device_type=x.device.type, enabled=False):
            rows, cols = owned_entries(col)
            cosine = recipe.target_fn is not None
            plain_scale = recipe.s if cosine and recipe.negative_fn is None and recipe.rescale is None else 1.0
            inv_wnorm = sub = code = None
            if cosine:
                inv_wnorm = torch.linalg.vector_norm(weight, dim=1).clamp_min(NORM_EPS).reciprocal()
                logits, sub = cosine_logits(x, weight, inv_wnorm, plain_scale, recipe.k)
            else:
                logits = torch.mm(x, weight.t())
                if bias is not None:
                    logits.add_(bias)
            plain = logits.new_zeros(len(col))
            plain[rows] = logits[rows, cols]
            reduce.sum_(plain)                                   # each row's target lives on exactly one rank
            best = logits.new_empty(0)
            s = recipe.s
            if cosine:
                cos_y = plain / plain_scale
                if recipe.observe is not None:
                    recipe.observe(cos_y)
                if recipe.rescale is not None:
                    s = recipe.rescale(_mean_negative_exp(logits, recipe.s, rows, cols, reduce), cos_y)
                with torch.enable_grad():
                    c = cos_y.detach().requires_grad_(True)
                    n = norms.detach().requires_grad_(True)
                    target = recipe.target_fn(c, n)
                t = target.detach()
                if recipe.negative_fn is not None:
                    best = _best_other(logits, rows, cols, reduce) * s
                    code = _reshape_negatives(logits, cos_y, t, recipe)
                elif plain_scale != s:
                    logits.mul_(s)
                plain = s * cos_y
            else:
                c = n = target = None
                t = cos_y = plain
            logits[rows, cols] = t[rows]
            if recipe.lam is None:
                lse = reduce.logsumexp(logits)
                loss = lse - t
            else:
                lse = None
                loss = _sigmoid_loss(logits, t, loss_bias, recipe, rows, cols, reduce)
            if recipe.negative_fn is not None:
                _check_reshaped(loss, recipe)
        ctx.save_for_backward(x, weight, loss_bias, col, logits, lse, inv_wnorm, cos_y, t, sub, code)
        ctx.margin_graph = (c, n, target)
        ctx.recipe, ctx.reduce, ctx.s, ctx.has_bias = recipe, reduce, s, bias is not None
        scale = torch.tensor(float(s), dtype=torch.float64)
        ctx.mark_non_differentiable(logits, cos_y, plain, best, scale)
        ctx.set_materialize_grads(False)   # no zero-filled [B, K] gradient for the logits output
        return loss, logits, cos_y, plain, best, scale

    @staticmethod
    def backward(ctx, grad_loss, *_unused):
        if grad_loss is None:
            return (None,) * 8
        x, weight, loss_bias, col, logits, lse, inv_wnorm, cos_y, t, sub, code = ctx.saved_tensors
        recipe, reduce = ctx.recipe, ctx.reduce
        with torch.autocast(device_type=x.device.type, enabled=False):
            plain_heads = recipe.target_fn is not None and recipe.negative_fn is None and recipe.k == 1
            # heads that only change the target: dL/dz of the whole matrix first (the backward's one [B, K] buffer),
            # the target's softmax read from it (so these heads' arithmetic is the earlier fused function's, bitwise)
            softmax = _dloss_dlogit_chunks(logits, lse, loss_bias, recipe) if plain_heads else None
            dtarget = _target_gradient(softmax, col, lse, loss_bias, t, grad_loss, recipe, reduce)
            c, n, target = ctx.margin_graph
            dn = None
            if target is not None:
                dc, dn = torch.autograd.grad(target, (c, n), dtarget, allow_unused=True, retain_graph=True)
                dtarget = torch.zeros_like(c) if dc is None else dc          # the target column: dL/d cos_y
                dn = None if dn is None else dn.to(n.dtype)
            if plain_heads:
                grad, colsum, bias_sum = _plain_gradient(ctx, softmax, logits, col, cos_y, grad_loss, dtarget,
                                                         inv_wnorm)
            else:
                grad, colsum, bias_sum = _chunked_gradient(ctx, x, weight, loss_bias, col, logits, lse, cos_y, t,
                                                           sub, code, grad_loss, dtarget, inv_wnorm)
            grad_loss_bias = None
            if loss_bias is not None and ctx.needs_input_grad[4]:   # dL/db = sum w sigmoid(b - z_y) - sum_neg dL/dz
                positive = _sigmoid_slope(loss_bias - t, recipe.sigmoid_clamp).mul(grad_loss).sum()
                grad_loss_bias = positive - reduce.sum_(bias_sum.reshape(1))[0]
            grad_b = grad.sum(0) if ctx.has_bias else None
            grad_x = None
            if ctx.needs_input_grad[0]:
                grad_x = reduce.sum_(_input_gradient(grad, weight))      # the shards' shares of dL/dx
            grad_w = _centre_gradient(grad, x, weight) if ctx.needs_input_grad[2] else None
            if grad_w is not None and colsum is not None:                # the radial part of d(W_j / ||W_j||)
                grad_w.addcmul_(weight, (colsum(grad_w) * inv_wnorm)[:, None], value=-1.0)
        return grad_x, dn, grad_w, grad_b, grad_loss_bias, None, None, None


def _input_gradient(grad, weight):
    """G W: grad [B, K] (or [k, B, K], one block per centre index: Sub-center ArcFace) times the centres."""
    if grad.dim() == 2:
        return torch.mm(grad, weight)
    centres = weight.view(grad.shape[2], grad.shape[0], -1)
    total = torch.mm(grad[0], centres[:, 0])
    for j in range(1, grad.shape[0]):
        total.addmm_(grad[j], centres[:, j])
    return total


def _centre_gradient(grad, x, weight):
    """G^T x, written straight into the [k*K, d] layout of the centres (rows c*k + j) for k blocks."""
    if grad.dim() == 2:
        return torch.mm(grad.t(), x)
    out = torch.empty_like(weight)
    rows = out.view(grad.shape[2], grad.shape[0], -1)
    for j in range(grad.shape[0]):
        torch.mm(grad[j].t(), x, out=rows[:, j])
    return out


def _target_gradient(softmax, col, lse, loss_bias, t, grad_loss, recipe, reduce):
    """dL/d(target logit) [B], complete on every rank: (p_y - 1) w for the softmax (p_y read from the softmax
    matrix when it exists), -sigmoid(b - z_y) w for UniFace."""
    if recipe.lam is not None:
        return -_sigmoid_slope(loss_bias - t, recipe.sigmoid_clamp) * grad_loss
    if softmax is None:
        p_y = torch.exp(t - lse)
    else:
        rows, cols = owned_entries(col)
        p_y = softmax.new_zeros(len(col))
        p_y[rows] = softmax[rows, cols]
        reduce.sum_(p_y)
    return (p_y - 1.0) * grad_loss


def _dloss_dlogit_(out, z, lse, loss_bias, recipe):
    """out <- dL/dz of the negatives, elementwise: the softmax exp(z - lse) (lse [rows, 1]), or UniFace's
    lam * sigmoid(z - b) (0 beyond the clamp)."""
    if recipe.lam is None:
        return torch.sub(z, lse, out=out).exp_()
    torch.sub(z, loss_bias, out=out)
    inside = None if recipe.sigmoid_clamp is None else at_most(out.abs(), recipe.sigmoid_clamp)
    out.sigmoid_().mul_(recipe.lam)
    return out if inside is None else out.mul_(inside)


def _dloss_dlogit_chunks(logits, lse, loss_bias, recipe):
    """dL/dz of the whole matrix into a new [B, K] buffer, row chunk by row chunk: UniFace's clamp mask then lives
    in chunk-sized temporaries, not [B, K] ones (fresh temporaries that large page-fault on every call; the last
    row of benchmarks/branch_cost.py shows the effect at chunk size already)."""
    out = torch.empty_like(logits)
    step = chunk_rows(logits.shape[1])
    for start in range(0, logits.shape[0], step):
        rows = slice(start, start + step)
        _dloss_dlogit_(out[rows], logits[rows], None if lse is None else lse[rows, None], loss_bias, recipe)
    return out


def _plain_gradient(ctx, grad, logits, col, cos_y, grad_loss, dtarget, inv_wnorm):
    """Whole-matrix passes, in place on dL/dz, for the heads that only change the target (logits = s * cos off the
    target column)."""
    recipe, s = ctx.recipe, ctx.s
    rows, cols = owned_entries(col)
    bias_sum = grad.new_zeros(())
    if recipe.lam is not None:
        bias_sum = grad.sum(dim=1).mul_(grad_loss).sum() - (grad[rows, cols] * grad_loss[rows]).sum()
    grad.mul_(grad_loss[:, None] * s)
    grad[rows, cols] = dtarget[rows]
    grad.mul_(inv_wnorm)
    h_y = grad[rows, cols]

    def colsum(_grad_w):   # after the matmuls, reusing the buffer: sum_b H_bj cos_bj, cos = logits / s off target
        grad.mul_(logits)
        grad[rows, cols] = h_y * (cos_y[rows] * s)
        return grad.sum(dim=0).div_(s)
    return grad, colsum, bias_sum


def _projected_colsum(weight, inv_wnorm):
    """sum_b H_bj cos_bj = (G^T x)_j . W_j / ||W_j||: the radial part from the raw centre gradient itself, row block
    by row block (a whole-matrix product would be a [C, d] temporary, the size of the centres' gradient)."""
    def colsum(grad_w):
        rows = max(1, CHUNK_ELEMENTS // weight.shape[1])
        return torch.cat([(g * w).sum(dim=1) for g, w in zip(grad_w.split(rows), weight.split(rows), strict=True)]
                         ).mul_(inv_wnorm)
    return colsum


def _chunked_gradient(ctx, x, weight, loss_bias, col, logits, lse, cos_y, t, sub, code, grad_loss, dtarget,
                      inv_wnorm):
    """Row chunk by row chunk, for reshaped negatives (their slope read off the logits, or from the cosines
    recomputed once into the gradient's buffer and overwritten by the gradient), K centres per class (spread to
    the chosen centre) and the linear softmax; the centres' 1 / ||W_j|| applied chunk by chunk."""
    recipe, s = ctx.recipe, ctx.s
    rows, cols = owned_entries(col)
    cosine = recipe.target_fn is not None
    k = recipe.k
    recompute = recipe.negative_fn is not None and not recipe.slope_of_logits
    inv_by_centre = None
    if recompute:   # the one recomputation: the cosines, into the gradient's buffer (k = 1: base.py refuses k > 1)
        grad = torch.mm(x, weight.t()).mul_(inv_wnorm)
    elif k > 1:
        grad = logits.new_empty(k, *logits.shape)     # one [B, K] block per centre index
        inv_by_centre = _by_centre(weight, inv_wnorm, k)[1]
    else:
        grad = torch.empty_like(logits)
    bias_sum = logits.new_zeros(())
    step = chunk_rows(logits.shape[1])
    for start in range(0, logits.shape[0], step):
        end = start + step
        if recompute:    # the slope first: it reads the cosines that g then overwrites
            slope = recipe.negative_slope(grad[start:end], cos_y[start:end, None], t[start:end, None])
        elif recipe.negative_fn is not None:
            slope = recipe.negative_slope(logits[start:end], cos_y[start:end, None], t[start:end, None],
                                          None if code is None else code[start:end])
        else:
            slope = s if cosine else None
        g = grad[start:end] if k == 1 else torch.empty_like(logits[start:end])
        _dloss_dlogit_(g, logits[start:end], None if lse is None else lse[start:end, None], loss_bias, recipe)
        g.mul_(grad_loss[start:end, None])
        r, cc = _chunk_targets(rows, cols, start, end)
        if recipe.lam is not None:
            bias_sum = bias_sum + g.sum() - g[r, cc].sum()
        if slope is not None:
            g.mul_(slope)
        g[r, cc] = dtarget[r + start]
        if k > 1:
            _spread_to_centres(g, sub[start:end], inv_by_centre, grad[:, start:end])
        elif cosine:
            g.mul_(inv_wnorm)
    return grad, _projected_colsum(weight, inv_wnorm) if cosine else None, bias_sum


def _spread_to_centres(g, index, inv, out):
    """out[j] <- g * inv[j] where the class's chosen centre is j, else 0 (out [k, rows, K], inv [k, K]): every
    entry written once, contiguously (no zero fill, no scatter)."""
    chosen = index.to(g.dtype)
    for j in range(out.shape[0]):
        one_hot = torch.sub(chosen, float(j)).abs_().clamp_(max=1.0).neg_().add_(1.0)    # 1 where index == j
        torch.mul(one_hot.mul_(g), inv[j], out=out[j])
