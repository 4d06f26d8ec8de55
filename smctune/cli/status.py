"""``smctune status``: per cell of a run, what is finished, running, pending, failed or collapsed."""
from __future__ import annotations

from smctune.cli.arguments import add_run_command, run_dir_of


def add_parser(commands) -> None:
    cmd = add_run_command(commands, "status",
                          "per cell: finished, running, pending (and for what), failed, collapsed; "
                          "no Ray needed",
                          "smctune status csqa-20261122-101500",
                          "smctune status smctune_runs/mawps-20261125-101500")
    cmd.set_defaults(handler=run)


def run(args) -> int:
    from smctune.sweep.status_format import format_status
    from smctune.sweep.status import read_status

    print(format_status(read_status(run_dir_of(args))))
    return 0
