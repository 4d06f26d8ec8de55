"""``smctune sweep`` and ``smctune resume``: run (or continue) a sweep through
``smctune.sweep.driver``, then print its report."""
from __future__ import annotations

from smctune.cli.arguments import (add_command, add_noise_arguments, add_run_command, add_sweep_arguments,
                                   sweep_request, verbosity)

HELP = "run a sweep: dense baseline + every method x sparsity x seed"


def add_parser(commands) -> None:
    cmd = add_command(commands, "sweep", HELP,
                      "smctune sweep csqa --methods all",
                      "smctune sweep csqa --methods gmp,omp_after --sparsities 0.2,0.5,0.8 --seeds 3",
                      "smctune sweep csqa --methods all --preset small --data-dir ./CommonsenseQA",
                      "smctune sweep csqa --methods all --preset paper --storage /nfs/runs "
                      "--mlflow-uri http://mlflow:5000", description=True)
    add_sweep_arguments(cmd)
    cmd.set_defaults(handler=run)


def add_resume_parser(commands) -> None:
    cmd = add_run_command(commands, "resume",
                          "continue an interrupted sweep from its run directory (finished trials are "
                          "not run again)",
                          "smctune resume csqa-20261122-101500",
                          "smctune resume /mnt/smctune/runs/csqa-paper --restart-errored")
    cmd.add_argument("--restart-errored", action="store_true",
                     help="also run again the trials that failed (default: keep their failure)")
    cmd.add_argument("--shared-storage", action="store_true",
                     help="the run directory is on storage every node mounts (multi-node clusters)")
    add_noise_arguments(cmd)
    cmd.set_defaults(handler=run_resume)


def run(args) -> int:
    from smctune.cli.report import print_report
    from smctune.sweep.driver import run_request

    print_report(run_request(sweep_request(args)).report)
    return 0


def run_resume(args) -> int:
    from smctune.cli.report import print_report
    from smctune.sweep.driver import resume

    result = resume(args.run, storage=args.storage, restart_errored=args.restart_errored,
                    shared_storage=args.shared_storage, verbosity=verbosity(args, default=None))
    print_report(result.report)
    return 0
