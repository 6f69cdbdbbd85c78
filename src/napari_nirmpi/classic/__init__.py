"""Classic reconstruction as MPI groups run it: Kaczmarz, CGNR (Tikhonov), FISTA (ℓ1) and an
adaptive primal-dual method (isotropic TV, ℓ1, ℓ2), non-negative, on the native grid or a finer
one (the system matrix interpolated), with an automatic λ (docs/classic.md)."""

from .api import (DEFAULT_ITERATIONS, METHODS, RECOMMENDED, REGS, ClassicResult, Solver, allowed_regs, default_reg,
                  parse_lam, parse_reg, reconstruct)
from .lam import KAPPA, RULE, auto_lambda, discrepancy_l2
from .operators import ForwardOperator, fine_system_matrix, interp_adjoint_matrix, row_weights
from .solvers import cgnr, fista, pdhg

__all__ = ["METHODS", "REGS", "RECOMMENDED", "ClassicResult", "reconstruct", "parse_reg", "parse_lam", "allowed_regs",
           "default_reg", "DEFAULT_ITERATIONS", "Solver", "auto_lambda", "discrepancy_l2", "RULE", "KAPPA",
           "ForwardOperator", "fine_system_matrix", "interp_adjoint_matrix", "row_weights", "cgnr", "fista",
           "pdhg"]
