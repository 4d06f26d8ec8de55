"""``smctune plan``: the trials a sweep would run, their resources and a time estimate; runs nothing."""
from __future__ import annotations

from smctune.cli.arguments import add_command, add_sweep_arguments, sweep_request

HELP = "show the trials a sweep would run, without running anything"


def add_parser(commands) -> None:
    cmd = add_command(commands, "plan", HELP,
                      "smctune plan csqa --methods all",
                      "smctune plan csqa --methods gmp,omp_after --sparsities 0.2,0.5,0.8 --seeds 3",
                      "smctune plan csqa --methods all --preset small --data-dir ./CommonsenseQA",
                      "smctune plan csqa --methods all --preset paper --storage /nfs/runs "
                      "--mlflow-uri http://mlflow:5000", description=True)
    add_sweep_arguments(cmd)
    cmd.add_argument("--step-seconds", metavar="S",
                     help="seconds per training step for the time estimate, instead of the "
                          "search space's step_seconds table (evaluation and setup times "
                          "still come from the table)")
    cmd.set_defaults(handler=run)


def run(args) -> int:
    from smctune.sweep.cluster import shutdown_ray
    from smctune.sweep.plan_view import plan_lines

    try:
        for line in plan_lines(sweep_request(args), step_seconds=args.step_seconds):
            print(line)
    finally:
        shutdown_ray()  # only a connection to RAY_ADDRESS: plan never starts a Ray of its own
    return 0
