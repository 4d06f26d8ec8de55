"""smctune's pruning library: torch only, usable from any PyTorch training loop.

    params = select_prunable(model, exclude=[r"classifier"])
    mask = prune(model, "magnitude", 0.9)                 # one-shot global magnitude, exact count
    enforcer = MaskEnforcer(model, mask, optimizer)
    ...  optimizer.step(); enforcer.apply()               # after every optimizer step

GMP: ``GMPSchedule`` + ``compute_mask(..., current=enforcer.mask)`` + ``enforcer.update``.
IMP: ``imp_sparsity(round)`` with ``current=`` the previous round's mask.
RigL: ``RigL(model, enforcer, optimizer, update_every=..., end_step=...)``, then
``rigl.maybe_update(step)`` after ``optimizer.step(); enforcer.apply()`` (grads still hold the batch).
"""
from .core import SCOPES, compute_mask, prune
from .criteria import CRITERIA, PruneProblem, Solution, register_criterion, register_solver
from .enforce import MaskEnforcer
from .mask import LayerStat, Mask
from .rigl import RigL, RigLConfig, rigl_drop_fraction, smcbench_drop_fraction
from .schedules import GMPSchedule, gmp_sparsity, imp_sparsity
from .select import PrunableParam, num_pruned, select_prunable, unique_parameters

__all__ = [
    "Mask", "LayerStat", "PrunableParam", "select_prunable", "num_pruned", "compute_mask", "prune",
    "MaskEnforcer", "gmp_sparsity", "GMPSchedule", "imp_sparsity", "CRITERIA",
    "SCOPES", "register_criterion", "register_solver", "PruneProblem", "Solution", "unique_parameters",
    "RigL", "RigLConfig", "rigl_drop_fraction", "smcbench_drop_fraction",
]
