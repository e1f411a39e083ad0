"""Plots of the theory results: loss curves, optimum vs cosine, validity maps. Matplotlib only."""
from __future__ import annotations

import math
import os

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from .margin_policies import POLICIES, target_and_gradient
from .model import magnitude_loss
from .optimum import optimal_magnitude
from .verify import MS1MV2_NEGATIVES, MagParams, ValidityMap

HOLDS, FAILS = "#0072B2", "#E69F00"   # Okabe-Ito blue / orange: colour-blind safe
LSE_MS1MV2 = math.log(MS1MV2_NEGATIVES)


def loss_curves(params: MagParams, cosines=(0.3, 0.5, 0.6, 0.7, 0.8, 0.9), lses=(0.0, LSE_MS1MV2)):
    """L_i(a) - L_i(a*) over the band for several cos theta_y, a* marked; one panel per lse_neg."""
    a = np.linspace(params.l_a, params.u_a, 400)
    fig, axes = plt.subplots(1, len(lses), figsize=(5.2 * len(lses), 4.2), sharey=True, constrained_layout=True)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(cosines)))
    for ax, lse in zip(np.atleast_1d(axes), lses, strict=True):
        for c, col in zip(cosines, colours, strict=True):
            a_star = float(optimal_magnitude(c, lse, **params.kwargs()))
            best = float(magnitude_loss(a_star, c, lse, **params.kwargs()))
            ax.plot(a, magnitude_loss(a, c, lse, **params.kwargs()) - best, color=col, label=f"cos θ_y = {c:g}")
            ax.plot([a_star], [0.0], "o", color=col, markersize=6)
        ax.set_title(f"lse_neg = {lse:.2f}" + ("  (85,741 negatives at cos 0)" if lse == LSE_MS1MV2 else
                                                "  (one negative at cos 0)"), fontsize=10)
        ax.set_xlabel("feature magnitude a")
        ax.set_ylim(-0.05, 1.5)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("L_i(a) − L_i(a*)  (loss above its minimum)")
    np.atleast_1d(axes)[-1].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"MagFace per-sample loss along the magnitude (dots: a*); {_describe(params)}", fontsize=11)
    return fig


def optimum_vs_cos(params: MagParams, lambdas=None, lse=LSE_MS1MV2):
    """a* against cos theta_y for several lambda_g, Mag-ArcFace and Mag-CosFace side by side."""
    bound = params.lambda_g_min
    lambdas = lambdas or (0.5 * bound, bound, params.lambda_g, 2 * params.lambda_g)
    cos = np.linspace(-0.2, 0.999, 600)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True, constrained_layout=True)
    colours = plt.cm.plasma(np.linspace(0, 0.8, len(lambdas)))
    for ax, form in zip(axes, ("arc", "cos"), strict=True):
        p = params.replace(form=form)
        for lam, col in zip(lambdas, colours, strict=True):
            a_star = optimal_magnitude(cos, lse, **p.replace(lambda_g=lam).kwargs())
            tag = " (= bound)" if math.isclose(lam, bound) else (" (< bound)" if lam < bound else "")
            ax.plot(cos, a_star, color=col, label=f"λ_g = {lam:.2f}{tag}")
        if form == "arc":
            ax.axvline(math.sin(params.u_m), color="k", ls="--", lw=1)
            ax.axvline(math.sin(params.l_m), color="grey", ls=":", lw=1)
            mid = 0.5 * (params.l_a + params.u_a)
            ax.text(math.sin(params.u_m), mid, "θ_y + u_m = π/2 ", fontsize=8, ha="right", rotation=90)
            ax.text(math.sin(params.l_m), mid, "θ_y + l_m = π/2 ", fontsize=8, ha="right", rotation=90,
                    color="grey")
        ax.set_title("Mag-ArcFace (the paper's MagFace)" if form == "arc" else "Mag-CosFace", fontsize=10)
        ax.set_xlabel("cos θ_y  (cosine to the own class centre)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("optimal magnitude a*")
    axes[1].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Optimal magnitude vs cosine, lse_neg = {lse:.2f}; {_describe(params, lam=False)}", fontsize=11)
    return fig


def validity_maps(maps: list[ValidityMap]):
    """One row per map, one column per property: blue where it holds, orange where it fails."""
    props = [("convex", "L_i strictly convex on [l_a, u_a]"), ("interior", "a* strictly inside (l_a, u_a)"),
             ("monotone", "a* non-increasing in θ_y")]
    fig, axes = plt.subplots(len(maps), 3, figsize=(14, 4.0 * len(maps)), constrained_layout=True, squeeze=False)
    cmap = ListedColormap([FAILS, HOLDS])
    for row, vm in zip(axes, maps, strict=True):
        p = vm.params
        for ax, (key, title) in zip(row, props, strict=True):
            ax.pcolormesh(vm.theta, vm.axis, getattr(vm, key).astype(float), cmap=cmap, vmin=0, vmax=1,
                          shading="nearest", rasterized=True)
            if p.form == "arc":
                ax.axvline(math.pi / 2 - p.u_m, color="k", ls="--", lw=1.2, label="θ_y + u_m = π/2")
                ax.axvline(math.pi / 2 - p.l_m, color="k", ls=":", lw=1.2, label="θ_y + l_m = π/2")
                ax.axvline(math.pi - p.l_m, color="k", ls="-.", lw=1.0, label="θ_y + l_m = π")
            if vm.axis_name == "lambda_g":
                ax.axhline(p.lambda_g_min, color="w", ls="--", lw=1.5)
                ax.text(0.05, p.lambda_g_min, f" bound {p.lambda_g_min:.2f}", color="w", va="bottom", fontsize=8)
                ax.set_ylabel("λ_g")
                fixed = f"lse_neg = {vm.fixed:.2f}"
            else:
                ax.set_ylabel("lse_neg = log Σ_j exp(s cos θ_j)")
                fixed = f"λ_g = {vm.fixed:g}"
            ax.set_xlabel("θ_y, angle to the own class centre (rad)")
            ax.set_title(f"{title}\n({fixed})", fontsize=10)
        row[0].legend(loc="lower left", fontsize=7, framealpha=0.8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=HOLDS), plt.Rectangle((0, 0), 1, 1, color=FAILS)]
    fig.legend(handles, ["holds", "fails"], loc="upper right", fontsize=9)
    fig.suptitle(f"Where MagFace's properties hold; {_describe(maps[0].params, lam=False)}", fontsize=12)
    return fig


def _describe(p: MagParams, lam=True) -> str:
    text = f"s={p.s:g}, [l_a, u_a]=[{p.l_a:g}, {p.u_a:g}], [l_m, u_m]=[{p.l_m:g}, {p.u_m:g}]"
    return text + (f", λ_g={p.lambda_g:g}" if lam else "")


def save(fig, path_stem: str, formats=("png", "pdf")) -> list[str]:
    """Write the figure in each format atomically (temp file + rename), so a crash never leaves half a file."""
    paths = []
    for fmt in formats:
        path = f"{path_stem}.{fmt}"
        tmp = f"{path_stem}.tmp-{os.getpid()}.{fmt}"
        fig.savefig(tmp, dpi=130, metadata={"CreationDate": None} if fmt == "pdf" else None)   # reproducible bytes
        os.replace(tmp, path)
        paths.append(path)
    plt.close(fig)
    return paths


def target_gradient(m: float = 0.5, s: float = 64.0):
    """ArcFace's target logit and its gradient in cos theta_y per theta policy (analytic gradient): the dead band of
    "threshold" is where the gradient falls to 0 just above cos(pi - m)."""
    c = np.linspace(-0.999, 0.999, 2001)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    styles = {"none": ("#0072B2", "-"), "easy": ("#009E73", "--"), "threshold": ("#D55E00", ":")}
    for policy in POLICIES:
        value, grad = target_and_gradient(c, m, policy)
        colour, ls = styles[policy]
        left.plot(c, s * value, ls, color=colour, lw=2, label=policy)
        right.plot(c, s * grad, ls, color=colour, lw=2, label=policy)
    right.plot(c, np.full_like(c, s), color="0.5", lw=1, label="straight-through (any policy)")
    dead = math.cos(math.pi - m)
    for ax in (left, right):
        ax.axvline(dead, color="0.3", lw=0.8, ls="-.")
        ax.set_xlabel("cos θ_y (cosine to the own class centre)")
        ax.grid(alpha=0.3)
    right.axhline(0, color="k", lw=0.8)
    right.annotate(f"θ_y = π − m (cos {dead:.3f}):\ngradient 0, the dead band", xy=(dead, 0), xytext=(-0.55, 0.35 * s),
                   arrowprops={"arrowstyle": "->"}, fontsize=9)
    left.set_ylabel("target logit s·cos(θ_y + m) under the policy")
    right.set_ylabel("its gradient in cos θ_y (analytic)")
    right.set_ylim(-1.2 * s, 3 * s)
    left.legend(title="theta policy", fontsize=9)
    right.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"ArcFace's target logit and gradient per theta policy, m = {m:g}, s = {s:g}", fontsize=11)
    return fig

