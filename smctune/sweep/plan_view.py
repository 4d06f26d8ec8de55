"""What a sweep would do, as text (``smctune plan``), and the plan a started sweep records.

``plan`` resolves and checks exactly what ``sweep`` would (the same request, the same data check,
the same trial list), so a plan that prints is a sweep that starts; it only stops short of running
anything, and starts no Ray of its own (it connects to ``RAY_ADDRESS`` when set). ``plan.json`` is
written by the sweep so a report can name the planned trials that have no record.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional, Union

from smctune.rundir.layout import RunDir, write_atomic

STAGE_TITLES = {1: "dense baselines + methods from pretrained weights",
                2: "methods from the dense fine-tuned checkpoint"}


def plan_lines(request, step_seconds: Union[None, str, float] = None) -> Iterator[str]:
    """The lines of ``smctune plan`` for a ``SweepRequest``: settings, the trials stage by stage,
    their count, resources and the time estimate on the visible cluster."""
    from smctune.catalog import registry
    from smctune.sweep.progress import describe
    from smctune.sweep.request import parse_step_seconds, resolve, validate_data
    from smctune.sweep.plan import plan_trials, stage_of

    step_seconds = parse_step_seconds(None if step_seconds is None else str(step_seconds))
    spec, space = resolve(request, for_plan=True)
    task = registry.load_task(spec.task)
    spec, data, notes = validate_data(task, spec, space)
    trials = plan_trials(spec, space)
    first = trials[0]
    yield f"preset: {spec.preset} ({spec.preset_reason})"
    yield (f"task: {spec.task}   data: {data.source} "
           f"({', '.join(f'{k} {v}' for k, v in data.splits.items())})")
    for note in notes:
        yield f"  {note}"
    epochs = f" ({first.train.epochs:g} epochs)" if first.train.epochs else ""
    yield (f"model: {first.model.source}:{first.model.name}   steps per fine-tune: "
           f"{first.train.max_steps}{epochs}   batch {first.train.batch_size}")
    if spec.models:
        yield f"architectures: {', '.join(spec.models)}"
    if spec.folds:
        yield f"folds: {', '.join(map(str, spec.folds))} (a cell's value is the mean over folds)"
    yield f"sparsities: {', '.join(f'{s:g}' for s in spec.sparsities)}"
    yield from _search_lines(spec, space, trials)
    yield from _prunable_lines(spec, space)
    yield resources_line(spec, space)
    fine_tunes = 0
    for stage, title in STAGE_TITLES.items():
        batch = [t for t in trials if stage_of(t) == stage]
        if not batch:
            continue
        yield ""
        yield f"stage {stage}: {title} ({len(batch)} trial{'s' if len(batch) != 1 else ''})"
        for trial in batch:
            runs = len(trial.levels) if trial.levels else 1
            fine_tunes += runs
            yield f"  {describe(trial)}" + (f"  ({runs} fine-tunes)" if runs > 1 else "")
    yield ""
    yield (f"{len(trials)} trials, {fine_tunes} fine-tunes of {first.train.max_steps} steps; "
           f"run directory would be {spec.run_dir}")
    yield from estimate_lines(spec, space, trials, step_seconds, request.shared_storage,
                              default_mlflow=not request.mlflow_uri)


def _search_lines(spec, space, trials) -> Iterator[str]:
    """The cells Optuna tunes, when the budget is more than one tuning per cell."""
    decl = space.search_decl(spec.preset)
    budget = spec.trials_per_cell or decl.trials_per_cell
    searched = [m for m in spec.methods if decl.space(m)]
    if budget > 1 and searched:
        from smctune.sweep.plan import tuned_trial_count

        extra = tuned_trial_count(trials, space, spec) - len(trials)
        yield (f"search: {', '.join(searched)} tuned with Optuna ({budget} tunings per cell: {extra} more "
               f"trials, each tuning on every seed and fold; "
               f"{'; '.join(f'{m}: ' + ', '.join(decl.space(m)) for m in searched)})")


def _prunable_lines(spec, space) -> Iterator[str]:
    """Which parameters are pruned: the search space's rule, ``--keep-dense`` and ``--prune-only``."""
    rules = space.prunable_rules(spec.keep_dense)
    yield ("prunable: " + (f"matching {', '.join(rules['include'])}" if rules["include"] else "every matrix")
           + (f", except {', '.join(rules['exclude'])}" if rules["exclude"] else "")
           + (f" (--keep-dense {','.join(spec.keep_dense)})" if spec.keep_dense else ""))
    if spec.prune_only:
        yield (f"module sensitivity (--prune-only): each method once per group, pruning only "
               f"{'; '.join(spec.prune_only)}")
    if spec.faithful == "smcbench":
        for name, patterns in sorted((space.prunable.get("smcbench_exclude") or {}).items()):
            if name in spec.methods:
                yield f"  {name} (--faithful smcbench) also keeps dense: {', '.join(patterns)}"


def resources_line(spec, space) -> str:
    from smctune.config.search_space import trial_resources

    resources = trial_resources(spec, space)
    preset_gpu = space.preset(spec.preset).resources.gpu
    gpu = f"gpu {resources.gpu:g}" + (f" (--gpus-per-trial; preset {preset_gpu:g})"
                                      if spec.gpus_per_trial is not None else "")
    memory = f", memory {resources.memory_gb:g} GB" if resources.memory_gb else ""
    return f"resources per trial: cpu {resources.cpu:g}, {gpu}{memory}"


def estimate_lines(spec, space, trials, step_seconds: Optional[float], shared_storage: bool,
                   default_mlflow: bool) -> Iterator[str]:
    """plan's last lines: step times, trial/GPU/CPU-hours, the cluster, how many trials it holds at
    once and the wall-clock at that concurrency; warnings when no trial fits, or when a multi-node
    sweep would be refused."""
    from smctune.config.search_space import trial_resources
    from smctune.sweep import estimate
    from smctune.sweep.cluster import multinode_problems, plan_cluster
    from smctune.sweep.plan import stage_of

    resources = trial_resources(spec, space)
    request = estimate.ray_request(resources.cpu, resources.gpu, resources.memory_gb)
    cluster, nodes, driver = plan_cluster()
    slots, limit = estimate.concurrency(cluster, request)
    capped = bool(spec.max_concurrent) and spec.max_concurrent < slots
    slots = min(slots, spec.max_concurrent) if spec.max_concurrent else slots
    where = f"{spec.search_space_file or space.source} step_seconds.{spec.preset}"
    times, missing = estimate.pick_step_time(space.step_seconds.get(spec.preset, {}), resources.gpu,
                                             cluster.accelerators, step_seconds, where)
    yield ""
    if times is None:
        yield f"estimate: {missing}"
    else:
        yield (f"step times: {times.step:g} s per step, {times.eval:g} s per evaluation, {times.setup:g} s "
               f"setup per trial ({times.note})")
        result = estimate.estimate(trials, stage_of, times, resources.cpu, resources.gpu, slots)
        yield (f"estimate: {result.trial_hours:.2f} trial-hours = {result.gpu_hours:.2f} GPU-hours "
               f"at gpu {resources.gpu:g} per trial ({result.cpu_hours:.2f} CPU-hours)")
    yield from memory_lines(spec, space, resources, cluster.accelerators)
    memory = f", {cluster.total('memory') / estimate.GIB:.1f} GB memory" + (
        f" ({cluster.memory_note})" if cluster.memory_note else "")
    yield (f"cluster: {cluster.where}: {len(cluster.nodes)} node{'s' if len(cluster.nodes) != 1 else ''}, "
           f"{cluster.total('CPU'):g} CPU, {cluster.total('GPU'):g} GPU{memory}"
           + (f", {', '.join(cluster.accelerators)}" if cluster.accelerators else ""))
    if slots <= 0:
        yield "fits 0 trials at once"
        later = "; an autoscaling cluster adds such a node when trials wait" if cluster.connected else ""
        yield f"warning: {estimate.unfit_reason(cluster, request)}: not even one trial fits{later}"
    else:
        why = f"--max-concurrent {spec.max_concurrent}" if capped else f"limited by {limit}"
        wall = ""
        if times is not None:
            stages = ", ".join(f"stage {stage} {estimate.format_duration(seconds)}"
                               for stage, seconds in result.stage_seconds)
            wall = f"; wall-clock about {estimate.format_duration(result.wall_seconds)} ({stages})"
        yield f"fits {slots} trial{'s' if slots != 1 else ''} at once ({why}){wall}"
    if cluster.connected:
        for problem in multinode_problems(spec, nodes, driver, request, shared_storage, default_mlflow):
            yield f"warning: smctune sweep would refuse: {problem}"


def memory_lines(spec, space, resources, accelerators) -> Iterator[str]:
    """The expected peak memory of one trial (``smctune.sweep.memory``) and, on GPUs, how many such
    trials one GPU holds against what the preset (or --gpus-per-trial) requests."""
    from smctune.sweep import memory

    facts = space.memory.get(spec.preset)
    if not facts:
        yield f"memory per trial: no estimate (the search space has no memory.{spec.preset} block)"
        return
    train = space.preset(spec.preset).train
    on_gpu = resources.gpu > 0
    need = memory.trial_memory(facts["parameters"], facts["activation_mb"], train.batch_size,
                               train.optimizer, on_gpu, train.precision)
    where = "on its GPU" if on_gpu else "resident (RSS, beyond the worker's ~0.4 GB of libraries)"
    yield (f"memory per trial: about {need.total / memory.GB:.1f} GB at peak {where} (GB: {need.breakdown()}; "
           f"{facts['parameters'] / 1e6:.1f}M parameters, batch {train.batch_size} at max_length "
           f"{train.max_length})")
    if not on_gpu:
        if resources.memory_gb and resources.memory_gb * memory.GB < need.total:
            yield (f"warning: the preset requests memory {resources.memory_gb:g} GB per trial, below the "
                   "estimate: Ray may place more trials on a node than its memory holds")
        return
    devices = list(accelerators) or [d for d in space.step_seconds.get(spec.preset, {}) if d != "cpu"]
    sized = [(device, memory.gpu_memory_gb(device)) for device in devices]
    sized = [(device, size) for device, size in sized if size]
    if not sized:
        yield "GPU memory: unknown GPU type; the estimate above is what one trial needs"
        return
    device, size = sized[0]
    fit = memory.trials_per_gpu(need, size)
    share = memory.gpu_share(fit)
    placed = int(round(1 / resources.gpu)) if resources.gpu < 1 else 1
    source = "--gpus-per-trial" if spec.gpus_per_trial is not None else "the preset"
    line = (f"GPU memory: one {device} ({size:g} GB) holds {fit} such trial{'s' if fit != 1 else ''}; "
            f"{source} requests gpu {resources.gpu:g}")
    if fit < 1:
        yield line
        yield (f"warning: one trial needs more than the {size:g} GB of one {device}: expect CUDA "
               "out-of-memory unless real batches are much shorter than max_length")
    elif placed > fit:
        yield line
        yield (f"warning: gpu {resources.gpu:g} puts {placed} trials on one {device}, about {fit} fit: "
               f"expect CUDA out-of-memory (--gpus-per-trial {share:g})")
    elif share < resources.gpu:
        yield f"{line} (--gpus-per-trial {share:g} would pack {int(round(1 / share))} per GPU)"
    else:
        yield line


def write_plan(run_dir: Union[str, Path], spec, trials) -> Path:
    """``plan.json``: the trials the sweep set out to run, so a report can name what is missing."""
    path = RunDir(run_dir).plan_file
    return write_atomic(path, json.dumps({"search": spec.search, "trials": [t.trial_id for t in trials]},
                                         indent=1))
