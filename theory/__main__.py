"""python -m theory: the lambda_g bound, a verdict table for the paper's settings, where the claims break, figures.

    python -m theory                      # paper settings; figures and theory.json into results/theory/
    python -m theory --l-m 0.4 --out /tmp/fig --no-figures

The numbers it prints (and a few the reproduction report cites) also go to TABLE/theory.json (default
results/theory/), one row per named quantity, for `python -m harness publish results/theory` and the report.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np

from .optimum import optimal_magnitude
from .verify import Grid, MagParams, check_convexity, check_interior_optimum, check_monotonicity, validity_map


def verdict(report) -> str:
    return "yes" if report.holds else f"NO ({report.n_violations}/{report.n_points})"


def first_failure(theta, ok_by_theta, step=False) -> str:
    """Smallest theta at which the property fails for some value of the other axis."""
    bad = np.flatnonzero(~ok_by_theta)
    if bad.size == 0:
        return "never on the grid"
    t = theta[bad[0]]
    if step:  # a monotonicity failure belongs to the step from theta[j] to theta[j+1]
        t2 = theta[min(bad[0] + 1, len(theta) - 1)]
        return f"the step theta_y = {t:.3f} -> {t2:.3f} rad (cos {math.cos(t):.3f} -> {math.cos(t2):.3f})"
    return f"theta_y = {t:.3f} rad (cos {math.cos(t):.3f})"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m theory",
                                 description="Numerically check MagFace's convexity and monotonicity claims.")
    ap.add_argument("--s", type=float, default=64.0)
    ap.add_argument("--l-a", type=float, default=10.0)
    ap.add_argument("--u-a", type=float, default=110.0)
    ap.add_argument("--l-m", type=float, default=0.45, help="0.45 in the official code, 0.4 in the paper text")
    ap.add_argument("--u-m", type=float, default=0.8)
    ap.add_argument("--lambda-g", type=float, default=35.0)
    ap.add_argument("--n", type=int, default=100, help="grid points per axis (n^3 points for the convexity check)")
    ap.add_argument("--out", default=os.path.join("results", "theory"),
                    help="folder for the figures (python -m harness publish results/theory copies them into the "
                         "repository's figures/)")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--table", default=os.path.join("results", "theory"),
                    help="folder for theory.json, the printed numbers by name ('' to skip)")
    args = ap.parse_args(argv)
    facts = {}
    base = MagParams(s=args.s, lambda_g=args.lambda_g, l_a=args.l_a, u_a=args.u_a, l_m=args.l_m, u_m=args.u_m)

    print("MagFace theorem check: float64 closed-form L'(a), L''(a); pure formula (no easy-margin rule)")
    print(f"lambda_g bound s*k*u_a^2*l_a^2/(u_a^2-l_a^2), s={base.s:g}, l_a={base.l_a:g}, u_a={base.u_a:g}:")
    for lm in sorted({base.l_m, 0.45, 0.40}, reverse=True):
        print(f"  (l_m, u_m) = ({lm:.2f}, {base.u_m:.2f}): {base.replace(l_m=lm).lambda_g_min:.4f}")
    for lm in (0.45, 0.40, 0.35):
        facts[f"bound_l_m_{lm:.2f}"] = base.replace(l_m=lm).lambda_g_min

    settings = [("this run", base), ("paper l_m=0.4", base.replace(l_m=0.4)),
                ("code default lambda_g=20", base.replace(lambda_g=20.0)),
                ("Mag-CosFace (0.35, 0.8, 150)", base.replace(form="cos", l_m=0.35, lambda_g=150.0))]
    print(f"\n{'setting':<30}{'lambda_g':>9}{'bound':>9}  {'angles':<22}{'convex':<20}{'interior a*':<20}"
          f"{'monotone a*':<20}")
    total_points, total_seconds = 0, 0.0
    for label, p in settings:
        for region, grid in (("theta_y+u_m <= pi/2", Grid.within_assumption(p, args.n)),
                             ("all (0, pi)", Grid.full(p, args.n))):
            if p.form == "cos" and region.startswith("theta"):
                continue
            conv, inner, mono = check_convexity(p, grid), check_interior_optimum(p, grid), check_monotonicity(p, grid)
            total_points += conv.n_points
            total_seconds += conv.seconds
            print(f"{label:<30}{p.lambda_g:>9.2f}{p.lambda_g_min:>9.3f}  {region:<22}{verdict(conv):<20}"
                  f"{verdict(inner):<20}{verdict(mono):<20}")
            setting = label.split(" (")[0].replace(" ", "_").replace("=", "_")
            key = f"{setting}_{'inside' if region[0] == 't' else 'all'}"
            for name, r in (("convex", conv), ("interior", inner), ("monotone", mono)):
                facts[f"{key}_{name}_violations"], facts[f"{key}_{name}_points"] = r.n_violations, r.n_points
            facts[f"{key}_min_d2"] = conv.worst
    print(f"\nconvexity checks: {total_points:,} (a, theta, lse) points in {total_seconds:.2f} s "
          f"({total_points / max(total_seconds, 1e-9) / 1e6:.1f} M points/s, one process)")

    t0 = time.perf_counter()
    lam_map = validity_map(base, axis_name="lambda_g")
    lse_map = validity_map(base, axis_name="lse_neg")
    print(f"validity maps ({lam_map.a_star.size + lse_map.a_star.size:,} optima) in {time.perf_counter() - t0:.2f} s")
    print(f"\nWhere the claims break for {label_of(base)}, any lse_neg in "
          f"[{lse_map.axis[0]:.1f}, {lse_map.axis[-1]:.1f}]:")
    print(f"  assumption theta_y + u_m <= pi/2 holds up to theta_y = {math.pi / 2 - base.u_m:.3f} rad "
          f"(cos {math.sin(base.u_m):.3f}); theta_y + l_m = pi/2 at {math.pi / 2 - base.l_m:.3f} rad "
          f"(cos {math.sin(base.l_m):.3f})")
    print(f"  convexity first fails at {first_failure(lse_map.theta, lse_map.convex.all(axis=0))}")
    facts.update(assumption_theta=math.pi / 2 - base.u_m, assumption_cos=math.sin(base.u_m),
                 l_m_theta=math.pi / 2 - base.l_m, l_m_cos=math.sin(base.l_m),
                 convexity_first_failure_theta=_first(lse_map.theta, lse_map.convex.all(axis=0)),
                 monotonicity_first_failure_theta=_first(lse_map.theta, lse_map.monotone.all(axis=0)))
    facts["convexity_first_failure_cos"] = math.cos(facts["convexity_first_failure_theta"])
    facts["monotonicity_first_failure_cos"] = math.cos(facts["monotonicity_first_failure_theta"])
    print(f"  monotonicity first fails at {first_failure(lse_map.theta, lse_map.monotone.all(axis=0), step=True)}")
    print(f"  unique optimum first fails at {first_failure(lse_map.theta, lse_map.unique.all(axis=0))}")
    low = base.replace(lambda_g=20.0)
    inner = check_interior_optimum(low, Grid.full(low, args.n))
    print(f"  lambda_g = 20 < bound {low.lambda_g_min:.3f}: optimum at l_a for {inner.n_violations} of "
          f"{inner.n_points} (theta, lse) points; worst L'(l_a) = {inner.worst:+.4f} at "
          f"cos_y = {inner.counterexample['cos_y']:.3f}, lse_neg = {inner.counterexample['lse_neg']:.1f}"
          if not inner.holds else "  lambda_g = 20: interior optimum everywhere on the grid")
    facts.update(lambda_20_at_l_a=inner.n_violations, lambda_20_points=inner.n_points, lambda_20_worst_d1=inner.worst,
                 lambda_20_worst_cos=(inner.counterexample or {}).get("cos_y", math.nan),
                 lambda_20_worst_lse=(inner.counterexample or {}).get("lse_neg", math.nan))
    kw = dict(s=base.s, lambda_g=base.lambda_g, l_a=base.l_a, u_a=base.u_a, l_m=base.l_m, u_m=base.u_m)
    for negatives in (1, 85741):   # a* with S other classes at cos 0 (PAPER.md section 2.5)
        for c in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
            facts[f"a_star_S{negatives}_cos_{c:.1f}"] = float(optimal_magnitude(c, math.log(negatives), **kw))
    for c in (0.1, 0.3, 0.5, 0.7, 0.9):
        facts[f"a_star_cosface_cos_{c:.1f}"] = float(optimal_magnitude(c, 0.0, **kw, form="cos"))
    if args.table:
        _write_table(args.table, facts, vars(args))

    if not args.no_figures:
        from . import figures  # matplotlib only when figures are drawn (--no-figures stays light)
        os.makedirs(args.out, exist_ok=True)
        written = []
        written += figures.save(figures.loss_curves(base), os.path.join(args.out, "theory_loss_curves"))
        written += figures.save(figures.optimum_vs_cos(base), os.path.join(args.out, "theory_optimum_vs_cos"))
        written += figures.save(figures.target_gradient(), os.path.join(args.out, "theory_target_gradient"))
        written += figures.save(figures.validity_maps([lam_map, lse_map]),
                                os.path.join(args.out, "theory_validity_map"))
        print("\nfigures: " + ", ".join(written))


def _first(theta, ok_by_theta) -> float:
    bad = np.flatnonzero(~ok_by_theta)
    return float(theta[bad[0]]) if bad.size else math.nan


def _write_table(folder: str, facts: dict, args: dict) -> None:
    """theory.json: {"args", "rows": [{"quantity", "value"}]}, written atomically (temp file + rename)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "theory.json")
    tmp = f"{path}.tmp-{os.getpid()}"
    rows = [{"quantity": k, "value": None if isinstance(v, float) and not math.isfinite(v) else v}
            for k, v in facts.items()]
    with open(tmp, "w") as f:
        json.dump({"args": args, "rows": rows}, f, indent=1)
    os.replace(tmp, path)
    print(f"numbers by name: {path}")


def label_of(p: MagParams) -> str:
    return f"s={p.s:g}, [l_m, u_m]=[{p.l_m:g}, {p.u_m:g}], lambda_g={p.lambda_g:g}"


if __name__ == "__main__":
    main()
