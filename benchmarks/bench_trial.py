"""What a smctune trial costs against the same fine-tune written as a plain PyTorch loop (ratios, no
timed assertions).

For each task (default: ``small`` CSQA and ``small`` MAWPS with GTS, fold 0) two fresh processes run
one after the other on one thread each:

(a) **smctune**: the planner's ``omp_before`` trial at 0.5 run by Ray Tune through smctune's own
    trainable in a fresh Ray worker: the real training loop (pruning at the level, mask enforcement
    after every step, evaluations, a trial checkpoint at every evaluation, reports to Tune). The
    trial measures itself (``smctune.train.costs``: seconds per phase, peak RSS of its worker). A
    sweep would also run the dense baseline first in that worker; records and MLflow are written by
    the driver, not in the trial's process.
(b) **plain**: this file's own loop over the same task runtime (the same tokenized data, model,
    batch size, optimizer and hyper-parameters, number of steps and evaluations): forward, loss,
    backward, optimizer step, lr step; nothing else. Its Adam is the fused kernel smctune's trials
    build (``--plain-kernel default``: torch's default implementation instead, to see what that
    choice is worth).

It prints, per task and as smctune/plain ratios: peak RSS (and memory beyond the process's RSS
before the trial), seconds per training step, seconds per evaluation, and the share of the trial's
wall time spent outside training steps with its breakdown (set-up, evaluation, pruning, checkpoints,
reporting, the rest). Goals (issue 19): peak memory <= 1.2x, step time <= 1.05x.

Run: ``python benchmarks/bench_trial.py [--tasks csqa,mawps] [--steps 30] [--repeats 3]
[--method omp_before]``; about 30 minutes on 2 cores with the defaults (three interleaved pairs per
task, medians printed: this box's speed drifts by up to 10% between runs; ``small`` runs real
all-MiniLM-L6-v2 weights).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FOLDED = {"mawps", "asdiv-a", "svamp"}   # tasks with cross-validation folds: fold 0 only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="csqa,mawps")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--evals", type=int, default=2, help="evaluations in the run (evenly spaced)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="pairs of runs, interleaved; medians are printed (this box's speed drifts by 10%%)")
    parser.add_argument("--method", default="omp_before")
    parser.add_argument("--sparsity", default="0.5")
    parser.add_argument("--plain-kernel", choices=("fused", "default"), default="fused",
                        help="the plain loop's Adam: the fused kernel smctune's trials use (the same "
                             "optimiser), or torch's default implementation (what fused saves)")
    parser.add_argument("--child", choices=("plain", "smctune"), help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "plain":
        print(json.dumps(plain_loop(args.task, args.preset, args.steps, args.evals, args.plain_kernel)))
        return
    if args.child == "smctune":
        print(json.dumps(tune_trial(args.task, args.preset, args.steps, args.evals, args.method, args.sparsity)))
        return
    rows = []
    for task in args.tasks.split(","):
        pairs = [(smctune_trial(task, args), run_child(task, args)) for _ in range(args.repeats)]
        smctune, plain = (median_of([pair[side] for pair in pairs]) for side in (0, 1))
        rows.append((task, smctune, plain, pairs))
        typical = sorted((pair[0] for pair in pairs), key=lambda run: run["wall_s"])[len(pairs) // 2]
        print_task(task, smctune, plain, typical, args)
    print_summary(rows)


def median_of(runs: list) -> dict:
    """Each number's median over the runs (the other fields of the first run)."""
    return {key: statistics.median(run[key] for run in runs) if isinstance(value, (int, float)) else value
            for key, value in runs[0].items()}


# ------------------------------------------------------------------------------------ (a) smctune

def smctune_trial(task: str, args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", "smctune", "--task", task, "--preset",
                          args.preset, "--steps", str(args.steps), "--evals", str(args.evals),
                          "--method", args.method, "--sparsity", args.sparsity],
                         check=True, capture_output=True, text=True,
                         env=dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled")))
    return json.loads(out.stdout.strip().splitlines()[-1])


def tune_trial(task: str, preset: str, steps: int, evals: int, method: str, sparsity: str) -> dict:
    """The planner's trial for (method, sparsity), through smctune's Ray trainable in a fresh Ray
    worker (records and MLflow live in the driver, not in the trial's process, and are left out)."""
    from ray import tune

    from smctune.sweep.plan import plan_trials
    from smctune.sweep.ray_session import ensure_ray, stop_ray
    from smctune.sweep.request import SweepRequest, resolve
    from smctune.sweep.tune_trainable import resource_request, trainable, trial_config

    work = Path(tempfile.mkdtemp(prefix="smctune-bench-trial-"))
    space_file = work / "space.yaml"
    space_file.write_text(f"extends: {task}.yaml\npresets:\n  {preset}:\n"
                          f"    train: {{max_steps: {steps}, eval_every: {max(1, steps // evals)}, "
                          f"checkpoint_every_s: 0}}\n    resources: {{cpu: 1, gpu: 0}}\n")
    request = SweepRequest.of(task, methods=method, sparsities=sparsity, preset=preset,
                              search_space=space_file, storage=work / "runs", name="bench",
                              folds="0" if task in FOLDED else None)
    sweep, space = resolve(request, for_plan=True)
    (spec,) = [trial for trial in plan_trials(sweep, space) if trial.method == method]
    spec = dataclasses.replace(spec, cache_root=str(work / "cache"), masks_dir=str(work / "masks"))
    resources = space.resolve(preset, spec.model.arch or None, "paper").resources
    ensure_ray(num_cpus=1)   # as a sweep starts Ray (and its workers' environment)
    tuner = tune.Tuner(tune.with_resources(trainable, resource_request(resources)),
                       param_space=dict(trial_config(resources), trial=spec.to_dict()),
                       run_config=tune.RunConfig(storage_path=str(work / "ray"), name="bench", verbose=0))
    result = tuner.fit()[0]
    stop_ray()
    if result.error is not None or "costs" not in result.metrics:
        raise SystemExit(f"{task}: the smctune trial failed: {result.error}")
    return dict(result.metrics["costs"])


# ------------------------------------------------------------------------------------ (b) plain

def run_child(task: str, args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", "plain", "--task", task, "--preset",
                          args.preset, "--steps", str(args.steps), "--evals", str(args.evals),
                          "--plain-kernel", args.plain_kernel],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def plain_loop(task: str, preset: str, steps: int, evals: int, kernel: str = "fused") -> dict:
    """The same fine-tune by hand. Uses smctune's task runtime only for what defines the task (its
    tokenized data, its model, its loss and its evaluation), none of smctune's training machinery."""
    import torch

    from smctune.catalog import registry
    from smctune.config.search_space import load_search_space
    from smctune.train.costs import current_rss_mb, peak_rss_mb

    torch.set_num_threads(1)   # what a 1-CPU smctune trial uses
    family = registry.load_task(task)
    importlib.import_module("transformers")   # a Ray worker has imported it before its trial starts

    start_rss = current_rss_mb()
    began = time.perf_counter()
    space = load_search_space(task)
    preset_settings = space.resolve(preset, space.architectures[0] if space.architectures else None, "paper")
    eval_every = max(1, steps // evals)
    train = dataclasses.replace(preset_settings.train, max_steps=steps, eval_every=eval_every)
    runtime = family.build(preset=preset, model=preset_settings.model, train=train,
                                             data_dir=None, device="cpu",
                                             fold=0 if task in FOLDED else None)
    torch.manual_seed(0)
    model = runtime.new_model()
    prefix = getattr(runtime, "backbone_prefix", "")
    if train.backbone_lr is not None and prefix:
        groups = [{"params": [p for n, p in model.named_parameters() if not n.startswith(prefix)]},
                  {"params": [p for n, p in model.named_parameters() if n.startswith(prefix)],
                   "lr": train.backbone_lr}]
    else:
        groups = [{"params": list(model.parameters())}]
    optimizer_class = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[train.optimizer]
    optimizer = optimizer_class(groups, lr=train.lr, betas=(train.adam_beta1, train.adam_beta2),
                                eps=train.adam_eps, weight_decay=train.weight_decay,
                                fused=kernel == "fused" or None)
    warmup = max(1, train.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    batches = runtime.train_batches(0)
    setup = time.perf_counter() - began
    train_s = eval_s = 0.0
    evaluations = 0
    model.train()
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        loss = runtime.loss(model, next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        scheduler.step()
        train_s += time.perf_counter() - t0
        if step % eval_every == 0 or step == steps:
            t0 = time.perf_counter()
            runtime.evaluate(model, final=step == steps)
            eval_s += time.perf_counter() - t0
            evaluations += 1
    wall = time.perf_counter() - began
    return {"setup_s": setup, "train_s": train_s, "eval_s": eval_s, "steps": steps, "evals": evaluations,
            "seconds_per_step": train_s / steps, "seconds_per_eval": eval_s / max(1, evaluations),
            "wall_s": wall, "outside_train_share": 1 - train_s / wall,
            "start_rss_mb": start_rss, "peak_rss_mb": peak_rss_mb()}


# ------------------------------------------------------------------------------------ output

def print_task(task: str, smctune: dict, plain: dict, typical: dict, args) -> None:
    """The medians side by side, then the phases of the smctune run of median wall time (medians
    taken phase by phase would not add up to one run)."""
    def ratio(a: float, b: float) -> str:
        return f"{a / b:6.3f}" if b else "     -"

    beyond_s = smctune["peak_rss_mb"] - smctune["start_rss_mb"]
    beyond_p = plain["peak_rss_mb"] - plain["start_rss_mb"]
    print(f"\n{task} ({args.preset}, {args.method} at {args.sparsity} vs a plain dense loop with "
          f"{args.plain_kernel} Adam; "
          f"{args.steps} steps, {smctune['evals']} evaluations; medians of {args.repeats} runs each)")
    print(f"  {'':34} {'smctune':>10} {'plain':>10} {'ratio':>7}")
    lines = [("peak RSS (MB)", smctune["peak_rss_mb"], plain["peak_rss_mb"]),
             ("RSS before the trial (MB)", smctune["start_rss_mb"], plain["start_rss_mb"]),
             ("peak beyond that (MB)", beyond_s, beyond_p),
             ("seconds per training step", smctune["seconds_per_step"], plain["seconds_per_step"]),
             ("seconds per evaluation", smctune["seconds_per_eval"], plain["seconds_per_eval"]),
             ("wall time of the trial (s)", smctune["wall_s"], plain["wall_s"]),
             ("share outside training steps", smctune["outside_train_share"], plain["outside_train_share"])]
    for name, a, b in lines:
        print(f"  {name:34} {a:10.3f} {b:10.3f} {ratio(a, b)}")
    wall = typical["wall_s"]
    accounted = sum(typical[f"{phase}_s"] for phase in ("setup", "train", "eval", "prune", "checkpoint", "report"))
    print(f"  wall time outside training steps, by phase (the smctune run of median wall time, {wall:.1f} s):")
    for phase, meaning in (("setup", "task runtime (data, tokenizer), model, restore"),
                           ("eval", "evaluations of the dev split"),
                           ("prune", "scoring and masking at the level"),
                           ("checkpoint", "trial checkpoints (one per evaluation here)"),
                           ("report", "records, masks and reports to Tune")):
        print(f"    {phase:11} {typical[f'{phase}_s']:8.2f} s  {typical[f'{phase}_s'] / wall:6.1%}  {meaning}")
    print(f"    {'other':11} {wall - accounted:8.2f} s  {(wall - accounted) / wall:6.1%}  "
          "between phases (loop bookkeeping, finiteness checks)")


def print_summary(rows: list) -> None:
    print("\nsummary (smctune / plain, ratio of medians [range of the pairs' ratios]): "
          "goal peak memory <= 1.2, step time <= 1.05")

    def ratios(key: str, smctune: dict, plain: dict, pairs: list) -> str:
        each = [a[key] / b[key] for a, b in pairs if b[key]]
        spread = f" [{min(each):.3f}-{max(each):.3f}]" if len(each) > 1 else ""
        return f"{smctune[key] / plain[key]:.3f}{spread}"

    for task, smctune, plain, pairs in rows:
        print(f"  {task:8} peak memory {ratios('peak_rss_mb', smctune, plain, pairs)}   "
              f"step time {ratios('seconds_per_step', smctune, plain, pairs)}   "
              f"evaluation {ratios('seconds_per_eval', smctune, plain, pairs)}   "
              f"outside training {smctune['outside_train_share']:.1%} vs {plain['outside_train_share']:.1%}")


if __name__ == "__main__":
    main()
