"""Inference across seeds: a mean with its confidence interval, and a paired difference with a CI, a verdict and
the smallest effect the seeds could have detected. Seeds are few (3-10), so intervals are Student-t, not bootstrap
(a percentile bootstrap of 5 values under-covers); within a run, harness.metrics.identity_bootstrap resamples
identities instead."""
from __future__ import annotations

import numpy as np
from scipy import stats

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
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and np.isfinite(x) and np.isfinite(y)]
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
