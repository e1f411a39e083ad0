"""Inference across seeds: a mean with its confidence interval, and a paired difference with a CI, a verdict and
the smallest effect the seeds could have detected. Seeds are few (3-10), so intervals are Student-t, not bootstrap
(a percentile bootstrap of 5 values under-covers); within a run, harness.measures.metrics.identity_bootstrap resamples
identities instead."""
from __future__ import annotations

import numpy as np
from scipy import optimize, stats

LEVEL = 0.95
POWER = 0.8


def mean_ci(values, level: float = LEVEL) -> tuple:
    """(mean, low, high) of finite values; low and high are None with fewer than 2 values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if len(v) == 0:
        return None, None, None
    if len(v) < 2:
        return float(v.mean()), None, None
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def interval_verdict(low, high, above: str, below: str, neither: str = "no detectable difference") -> str:
    """The verdict on a difference from its interval: `above` when the whole interval lies above 0, `below` when
    under it, else `neither`; "not computable" when there is no interval."""
    if low is None or high is None:
        return "not computable"
    return above if low > 0 else below if high < 0 else neither


def paired_difference(a, b, level: float = LEVEL, power: float = POWER) -> dict:
    """a - b paired by seed: mean difference, its t interval, a verdict ("better" / "worse" when the interval
    excludes 0, else "no detectable difference at n seeds") and `detectable`, the smallest true difference these
    seeds would detect with the given power at this level (two-sided). Higher is taken as better: negate lower-is-
    better metrics before calling."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True)
             if x is not None and y is not None and np.isfinite(x) and np.isfinite(y)]
    n = len(pairs)
    if n < 2:
        return {"diff": float(pairs[0][0] - pairs[0][1]) if pairs else None, "diff_ci_low": None,
                "diff_ci_high": None, "verdict": f"not computable: {n} paired seed(s), need 2", "detectable": None,
                "seeds": n}
    d = np.array([x - y for x, y in pairs])
    mean, low, high = mean_ci(d, level)
    se = d.std(ddof=1) / np.sqrt(n)
    detectable = float((stats.t.ppf(0.5 + level / 2, n - 1) + stats.t.ppf(power, n - 1)) * se)
    verdict = interval_verdict(low, high, "better", "worse", f"no detectable difference at {n} seeds "
                               f"(|diff| < {detectable:.3g} would go unseen)")
    return {"diff": mean, "diff_ci_low": low, "diff_ci_high": high, "verdict": verdict, "detectable": detectable,
            "seeds": n}


# --- families and equivalence: the verdicts of the comparison tables (harness.sweeps.tables.compare) -------------
def holm(pvalues) -> list:
    """Holm's step-down adjusted p-values of one family (None or NaN entries pass through and do not count)."""
    p = np.array([np.nan if v is None else v for v in pvalues], float)
    finite = np.flatnonzero(np.isfinite(p))
    adjusted = np.full(len(p), np.nan)
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return [None if np.isnan(v) else float(v) for v in adjusted]


def benjamini_hochberg(pvalues) -> list:
    """Benjamini-Hochberg adjusted p-values (scipy.stats.false_discovery_control) of one family."""
    p = np.array([np.nan if v is None else v for v in pvalues], float)
    out = np.full(len(p), np.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = stats.false_discovery_control(p[finite], method="bh")
    return [None if np.isnan(v) else float(v) for v in out]


def detectable_effect(se: float, n: int, level: float = LEVEL, power: float = POWER) -> float:
    """The smallest true paired difference a two-sided paired t test of n pairs (standard error `se`) detects with
    the given power, from the exact non-central t distribution (not the normal approximation t_a + t_b)."""
    df, crit = n - 1, stats.t.ppf(0.5 + level / 2, n - 1)
    if se <= 0:
        return 0.0

    def shortfall(delta):
        nc = delta / se
        lower = stats.nct.cdf(-crit, df, nc)   # the wrong-sign tail: scipy returns NaN once it underflows
        return stats.nct.sf(crit, df, nc) + (lower if np.isfinite(lower) else 0.0) - power
    high = crit * se
    while shortfall(high) < 0:   # widen the bracket until the power is reached
        high *= 1.5
    return float(optimize.brentq(shortfall, 0.0, high))


def paired_test(a, b, margin: float | None = None, level: float = LEVEL, power: float = POWER) -> dict:
    """a - b paired by replicate: mean difference, its t interval, the two-sided p of no difference, the TOST p of
    equivalence within +-margin (the larger of the two one-sided p-values; None without a margin) and the effect
    detectable with `power` (exact). Higher is better: negate lower-is-better metrics before calling."""
    if margin is not None and not (np.isfinite(margin) and margin > 0):
        raise ValueError(f"equivalence margin {margin!r}: expected a number > 0, declared before the run")
    pairs = [(x, y) for x, y in zip(a, b, strict=True)
             if x is not None and y is not None and np.isfinite(x) and np.isfinite(y)]
    n = len(pairs)
    if n < 2:
        return {"n": n, "diff": float(pairs[0][0] - pairs[0][1]) if pairs else None, "diff_ci_low": None,
                "diff_ci_high": None, "p": None, "p_equivalence": None, "detectable": None, "margin": margin,
                "se": None}
    d = np.array([x - y for x, y in pairs])
    mean, low, high = mean_ci(d, level)
    se = d.std(ddof=1) / np.sqrt(n)
    if se == 0:
        p = 0.0 if mean != 0 else 1.0
        p_eq = None if margin is None else (0.0 if abs(mean) < margin else 1.0)
    else:
        p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
        p_eq = None if margin is None else float(max(stats.t.sf((mean + margin) / se, n - 1),
                                                     stats.t.cdf((mean - margin) / se, n - 1)))
    return {"n": n, "diff": mean, "diff_ci_low": low, "diff_ci_high": high, "p": p, "p_equivalence": p_eq,
            "detectable": detectable_effect(se, n, level, power), "margin": margin, "se": float(se)}


def family_verdicts(tests: list, family: str, level: float = LEVEL) -> list:
    """The tests of one declared family (dicts from paired_test) with family, family_size, p_holm,
    p_equivalence_holm and a verdict on the adjusted values: "better" / "worse" (no difference rejected),
    "equivalent within +-margin" (both one-sided tests rejected), else "inconclusive (80 % power for |diff| >= X)",
    or "not computable" (fewer than 2 replicates). X (`detectable`) is the effect a test of the family has 80 %
    power for at the level Holm's first step uses, alpha / m (so at least as large as X at alpha). A family of one
    member is its own correction (p_holm = p)."""
    if not tests:
        raise ValueError(f"family {family!r} has no member; a family holds at least one comparison")
    alpha = 1 - level
    p_holm = holm([t["p"] for t in tests])
    p_bh = benjamini_hochberg([t["p"] for t in tests])
    p_eq_holm = holm([t["p_equivalence"] for t in tests])
    out = []
    corrected = 1 - alpha / max(1, sum(t["p"] is not None for t in tests))   # Holm's m: the computable tests
    for t, ph, pb, pe in zip(tests, p_holm, p_bh, p_eq_holm, strict=True):
        if t.get("se") is not None:
            t = {**t, "detectable": detectable_effect(t["se"], t["n"], corrected)}
        if ph is None:
            verdict = f"not computable: {t['n']} paired replicate(s), need 2"
        elif ph < alpha:
            verdict = "better" if t["diff"] > 0 else "worse"
        elif pe is not None and pe < alpha:
            verdict = f"equivalent within ±{t['margin']:g}"
        else:
            verdict = f"inconclusive ({100 * POWER:.0f} % power for |diff| >= {t['detectable']:.3g})"
        out.append({**t, "family": family, "family_size": len(tests), "p_holm": ph, "p_bh": pb,
                    "p_equivalence_holm": pe, "verdict": verdict})
    return out
