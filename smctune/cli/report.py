"""``smctune report`` and ``smctune layers``: what a finished (or partial) sweep found, read from its
run directory or its MLflow experiment by ``smctune.report``."""
from __future__ import annotations

from pathlib import Path

from smctune.cli.arguments import add_run_command, run_dir_of
from smctune.errors import UserError


def add_parser(commands) -> None:
    cmd = add_run_command(commands, "report",
                          "the answer of a finished or partial sweep: failing sparsity per method, "
                          "results.json, report.md, a self-contained report.html and PNG figures",
                          "smctune report smctune_runs/csqa-20261122-101500",
                          "smctune report csqa-20261122-101500 --tolerance 2% --alpha 0.05 --compare-paper",
                          "smctune report --mlflow-uri http://mlflow:5000 --experiment smctune/csqa-paper "
                          "--out csqa-report", run_optional=True)
    cmd.add_argument("--metric", choices=("best", "final"), default="best",
                     help="best over evaluations at the target sparsity (SMC-Bench's protocol) or "
                          "the final evaluation (default: best)")
    cmd.add_argument("--tolerance", default="1",
                     help="a level fails when its mean is below dense by more than this: points "
                          "(1 = one point, the default) or percent of dense (2%%)")
    cmd.add_argument("--alpha", type=float, default=None,
                     help="also require the drop to be significant across seeds: one-sided Welch "
                          "t-test at this level (e.g. 0.05; needs 2+ seeds)")
    cmd.add_argument("--compare-paper", action="store_true",
                     help="overlay the SMC-Bench paper's dense baselines and approximate curve points "
                          "(read from its figures)")
    cmd.add_argument("--layers-at", default=None,
                     help="sparsities for the layerwise figures (default: the grid levels nearest "
                          "0.36, 0.672, 0.832, as the paper's figures 6-8)")
    cmd.add_argument("--mlflow-uri", help="build the report from this MLflow tracking server/store "
                                          "instead of a run directory")
    cmd.add_argument("--experiment", help="with --mlflow-uri: the sweep's experiment (smctune/<name>)")
    cmd.add_argument("--out", help="where the report goes (default: the run directory; with "
                                   "--mlflow-uri: ./<sweep name>-report)")
    cmd.set_defaults(handler=run)


def add_layers_parser(commands) -> None:
    cmd = add_run_command(commands, "layers",
                          "per-layer sparsity of finished trials, fully pruned layers flagged",
                          "smctune layers mawps-20261125-101500 --method omp_before",
                          "smctune layers smctune_runs/csqa-20261122-101500 --method gmp --sparsity 0.36",
                          "smctune layers thermo-hotcold-20261202-101500 --by-group")
    cmd.add_argument("--method", help="only this method's trials")
    cmd.add_argument("--sparsity", help="only levels at this sparsity (in [0, 1); 0 = dense)")
    cmd.add_argument("--by-group", action="store_true",
                     help="one row per trial level with the sparsity of each prunable group of the "
                          "search space (e.g. q, k, v, o, ffn), weighted by layer size")
    cmd.set_defaults(handler=run_layers)


def run(args) -> int:
    from smctune.config.values import parse_sparsities
    from smctune.report.criterion import Criterion, parse_alpha, parse_tolerance
    from smctune.report.write import ReportOptions, write_report

    criterion = Criterion(parse_tolerance(args.tolerance), parse_alpha(args.alpha))
    levels = tuple(parse_sparsities(args.layers_at, "--layers-at")) if args.layers_at is not None else None
    options = ReportOptions(metric=args.metric, criterion=criterion, compare_paper=args.compare_paper,
                            layer_levels=levels, out_dir=Path(args.out).resolve() if args.out else None)
    if args.mlflow_uri:
        from smctune.tracking.source import fetch_run

        if args.run:
            raise UserError("give either a run directory or --mlflow-uri with --experiment, not both")
        if not args.experiment:
            raise UserError("--mlflow-uri needs --experiment (the sweep's experiment, smctune/<name>)")
        out = options.out_dir or Path(f"{args.experiment.split('/')[-1]}-report").resolve()
        run_dir = fetch_run(args.mlflow_uri, args.experiment, out)   # the report goes in out
    elif not args.run:
        raise UserError("which run? give a run directory (or its name under --storage), or --mlflow-uri")
    else:
        run_dir = run_dir_of(args)
    print_report(write_report(str(run_dir), options))
    return 0


def print_report(paths) -> None:
    """The failing-sparsity table and where the report's files are (``report.write.ReportPaths``)."""
    print()
    print(paths.table)
    print(f"\nreport:  {paths.html}\nresults: {paths.results_json}\n"
          f"figures: {', '.join(p.name for p in paths.figures)} (in {paths.html.parent})")


def run_layers(args) -> int:
    from smctune.report.load import load_run
    from smctune.report.tables import format_layer_groups, format_layers

    sparsity = parse_level(args.sparsity)
    run = load_run(run_dir_of(args))
    if args.method and args.method not in {t.method for t in run.trials}:
        raise UserError(f"--method: no trial of '{args.method}' in this run "
                        f"(valid: {', '.join(sorted({t.method for t in run.trials})) or 'none'})")
    if not args.by_group:
        print(format_layers(run, method=args.method, sparsity=sparsity))
        return 0
    from smctune.sweep.request import recorded_search_space

    groups = recorded_search_space(run.run_dir, run.spec).keep_dense_groups()
    if not groups:
        raise UserError(f"--by-group: task {run.spec.task} defines no prunable groups")
    print(format_layer_groups(run, groups, method=args.method, sparsity=sparsity))
    return 0


def parse_level(text):
    """``layers --sparsity``: one level in [0, 1) (0: the dense baseline's), or None for every level."""
    if text is None:
        return None
    import math

    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--sparsity '{text}' is not a number (expected a level in [0, 1), e.g. 0.36)") from None
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise UserError(f"--sparsity must be a level in [0, 1) (0 = dense), got {text}")
    return value
