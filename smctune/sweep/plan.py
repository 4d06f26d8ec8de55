"""The plan of a sweep: every trial a ``SweepSpec`` asks for, and the stage each runs in.

A sweep runs in two stages, because "after" methods and LTH must start from the dense model of the
same seed and must never train it again:

  stage 1  the dense baselines and every method that starts from the pretrained weights
  stage 2  the methods that start from the cached dense fine-tuned checkpoint (``*_after``, ``lth``)

Planning imports neither Ray nor torch: ``plan`` and ``status`` re-plan a sweep from its spec.
"""
from __future__ import annotations

from smctune.catalog import registry
from smctune.catalog.tunables import check_all
from smctune.config.search_space import SearchSpace
from smctune.config.settings import resolve_epochs
from smctune.config.specs import SweepSpec, TrialSpec
from smctune.errors import UserError
from smctune.rundir.layout import RunDir
from smctune.train.schedules import schedule_of


def plan_trials(sweep: SweepSpec, space: SearchSpace) -> list[TrialSpec]:
    """Every trial of the sweep: architectures x seeds x folds x methods x (``--prune-only`` groups)
    x levels, dense first. ``train.epochs`` becomes ``max_steps`` over the recorded training size."""
    run = RunDir(sweep.run_dir)
    cache_root, masks_dir = str(run.dense_cache_dir), str(run.masks_dir)
    methods = ("dense",) + tuple(m for m in sweep.methods if m != "dense")
    trials = []
    for arch in sweep.models or ("",):
        preset = space.resolve(sweep.preset, arch, sweep.faithful)
        train = resolve_epochs(preset.train, sweep.train_examples)
        for seed in sweep.seeds:
            for fold in sweep.folds or (None,):
                for name in methods:
                    spec = registry.method_spec(name)
                    tunables = space.tunables(name, sweep.preset, spec.defaults(sweep.faithful),
                                              sweep.faithful)
                    check_tunables(spec, tunables, space.source)
                    for group in (sweep.prune_only or ("",)) if name != "dense" else ("",):
                        prunable = space.prunable_rules(sweep.keep_dense, name, sweep.faithful, only=group)
                        common = dict(task=sweep.task, method=name, seed=seed, preset=sweep.preset,
                                      model=preset.model, train=train, tunables=tunables,
                                      prunable=prunable, data_dir=sweep.data_dir, cache_root=cache_root,
                                      fold=fold, stop=preset.stop, masks_dir=masks_dir, group=group)
                        trials.extend(schedule_of(spec).plan(tunables, sweep.sparsities, common))
    return trials


def tuned_trial_count(trials: list[TrialSpec], space: SearchSpace, sweep: SweepSpec) -> int:
    """Trials the sweep runs at most: every planned trial, plus the further tunings of searched cells
    (each tuning runs every seed and fold of its cell)."""
    decl = space.search_decl(sweep.preset)
    budget = sweep.trials_per_cell or decl.trials_per_cell
    searched = sum(1 for t in trials if decl.space(t.method))
    return len(trials) + (budget - 1) * searched if budget > 1 else len(trials)


def check_tunables(method, values: dict, source: str) -> None:
    """Settings that cannot work fail in the driver, before any trial is scheduled (and the cell
    searcher rejects such suggestions with it)."""
    check_all(method.tunables, values, f"{source}: {method.name}")
    schedule_of(method).check(method, values, source)
    if method.criterion == "obert" and values["variant"] == "smcbench" and values["block_size"] != 1:
        raise UserError(f"{source}: {method.name} variant smcbench is the diagonal Fisher: set "
                        f"block_size: 1 (got {values['block_size']}) or use variant paper")


def stage_of(spec: TrialSpec) -> int:
    return 2 if registry.method_spec(spec.method).start == "dense" else 1


def resolve_preset(requested: str, gpus: float) -> tuple[str, str]:
    """``auto`` -> paper with GPUs, smoke without; ``paper`` without GPUs is an error."""
    registry.preset_entry(requested)
    if requested == "auto":
        if gpus > 0:
            return "paper", f"auto: Ray sees {gpus:g} GPU(s)"
        return "smoke", "auto: Ray sees no GPU"
    if requested == "paper" and gpus <= 0:
        raise UserError("preset 'paper' needs GPUs but Ray sees none; use --preset small "
                        "(real small models on CPU) or --preset smoke (pipeline check)")
    return requested, "requested"
