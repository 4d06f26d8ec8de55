"""The ``smctune`` command: the parser, and the dispatch to one module per subcommand.

Each subcommand module registers its arguments (``add_parser``) with the handler that turns them
into calls of ``smctune.sweep`` / ``smctune.report`` and prints. Heavy libraries (torch, ray, mlflow,
transformers) are imported inside the handlers that need them, so ``smctune --help`` and ``smctune
ls`` answer instantly. Every ``UserError`` becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from smctune import __version__
from smctune.cli import env, ls, plan, report, status, sweep
from smctune.cli.arguments import examples
from smctune.sweep.request import DEFAULT_STORAGE
from smctune.errors import UserError

# the subcommands, in the order ``smctune --help`` lists them
SUBCOMMANDS = (ls.add_parser, plan.add_parser, sweep.add_parser, report.add_parser,
               sweep.add_resume_parser, report.add_layers_parser, status.add_parser, env.add_parser)


class ParseError(Exception):
    """A command line argparse cannot parse; ``main`` prints it as every other error."""


class Parser(argparse.ArgumentParser):
    """argparse's parser with its errors as one line, like every ``UserError`` (argparse prints the
    whole usage block first, which buries the one line that says what is wrong); the subcommands'
    parsers are of this class too (argparse makes them with ``type(parent)``)."""

    def error(self, message: str):
        command = self.prog.partition(" ")[2]
        where = f"smctune {command} --help" if command else "smctune --help"
        raise ParseError(f"{' '.join(message.split())} (see {where})")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="smctune",
        description="SMC-Bench (Sparsity May Cry) sweeps: every task x pruning method x sparsity as a "
                    "Ray Tune trial, tracked in MLflow, reported as the sparsity where each method "
                    "stops matching dense.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples("smctune ls methods",
                        "smctune plan csqa --methods all",
                        "smctune sweep csqa --methods all",
                        "smctune sweep csqa --methods dense,omp_after,lth --preset small --sparsities 0.2,0.36",
                        "smctune report smctune_runs/csqa-20261122-101500",
                        "smctune env"),
    )
    parser.add_argument("--version", action="version", version=f"smctune {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for add_parser in SUBCOMMANDS:
        add_parser(commands)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except ParseError as err:
        print(f"smctune: error: {err}", file=sys.stderr)
        return 2
    try:
        return args.handler(args)
    except UserError as err:
        print(f"smctune: error: {' '.join(str(err).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        run = getattr(args, "run", None) or getattr(args, "name", None)
        storage = getattr(args, "storage", DEFAULT_STORAGE)
        where = f" --storage {storage}" if run and str(storage) != DEFAULT_STORAGE else ""
        hint = f"smctune resume {run}{where}" if run else "smctune resume <run directory>"
        print(f"smctune: interrupted; finished trials are kept, continue with: {hint}", file=sys.stderr)
        return 130


def entry() -> None:
    """The console script. Ray is stopped here as well as in the commands, so no path through
    ``main`` (an error turned into an exit code included) leaves a local instance running."""
    from smctune.sweep.cluster import shutdown_ray

    code = main()
    shutdown_ray()
    sys.exit(code)
