"""smctune's pruning library: torch only, usable from any PyTorch training loop.

    params = select_prunable(model, exclude=[r"classifier"])
    mask = prune(model, "magnitude", 0.9)                 # one-shot global magnitude, exact count
    enforcer = MaskEnforcer(model, mask, optimizer)
    ...  loss.backward(); enforcer.before_step(); optimizer.step(); enforcer.after_step()

GMP: ``GMPSchedule`` + ``compute_mask(..., current=enforcer.mask)`` + ``enforcer.update``.
IMP: ``imp_sparsity(round)`` with ``current=`` the previous round's mask.
RigL: ``RigL(model, enforcer, optimizer, update_every=..., end_step=...)``; ``rigl.before_step(step)``
in place of ``enforcer.before_step()`` (keeps the dense gradient on update steps), then
``rigl.maybe_update(step)`` after ``optimizer.step(); enforcer.after_step()``.
All of it from your own loop in two calls a step: ``SparseTraining`` (``smctune.pruning.hooks``).
"""
from .core import SCOPES, compute_mask, prune
from .criteria import CRITERIA, PruneProblem, Solution, register_criterion, register_solver
from . import obert, sparsegpt, wanda
from .enforce import MaskEnforcer, gradient_masking_blocker
from .hooks import SparseTraining
from .mask import LayerStat, Mask
from .rigl import RigL, RigLConfig, rigl_drop_fraction, smcbench_drop_fraction
from .schedules import GMPSchedule, gmp_sparsity, imp_sparsity
from .select import PrunableParam, num_pruned, select_prunable, unique_parameters

__all__ = [
    "Mask", "LayerStat", "PrunableParam", "select_prunable", "num_pruned", "compute_mask", "prune",
    "MaskEnforcer", "gmp_sparsity", "GMPSchedule", "imp_sparsity", "CRITERIA",
    "SCOPES", "register_criterion", "register_solver", "PruneProblem", "Solution", "unique_parameters",
    "RigL", "RigLConfig", "rigl_drop_fraction", "smcbench_drop_fraction",
    "SparseTraining", "gradient_masking_blocker",
    "obert", "sparsegpt", "wanda",  # modules, imported so their criteria register
]
