"""Numerical verification of MagFace's theorem: L_i(a) convex in the magnitude a, optimum a* monotone in cos.

Float64 NumPy/SciPy only; imports nothing else of the project.

    import theory
    theory.lambda_g_min(64, 10, 110, 0.45, 0.8)                   # 22.5867
    theory.optimal_magnitude(0.8, 11.36, s=64, lambda_g=35, l_a=10, u_a=110, l_m=0.45, u_m=0.8)
    print(theory.check_convexity(theory.MagParams(), theory.Grid.within_assumption(theory.MagParams())))
"""
from .margin_span import margin_span_share, optimal_margin_span, widest_margin_span
from .model import (
                    assumption_holds,
                    check_params,
                    lambda_g_min,
                    lse_from_cosines,
                    magnitude_loss,
                    magnitude_loss_d1,
                    magnitude_loss_d2,
                    margin,
                    regulariser,
)
from .optimum import Optimum, optimal_magnitude
from .verify import (
                    Grid,
                    MagParams,
                    Report,
                    ValidityMap,
                    check_convexity,
                    check_interior_optimum,
                    check_monotonicity,
                    validity_map,
)

__all__ = ["lambda_g_min", "magnitude_loss", "magnitude_loss_d1", "magnitude_loss_d2", "margin", "regulariser",
           "lse_from_cosines", "assumption_holds", "check_params", "optimal_magnitude", "Optimum", "margin_span_share",
           "optimal_margin_span", "widest_margin_span", "MagParams",
           "Grid", "Report", "ValidityMap", "check_convexity", "check_interior_optimum", "check_monotonicity",
           "validity_map"]
