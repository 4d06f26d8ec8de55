"""Arguments shared by several subcommands, and their translation into the sweep package's inputs.

Nothing heavy is imported here: every subcommand module imports this one when the parser is built,
for ``smctune --help`` as well.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from smctune.sweep.request import DEFAULT_STORAGE, SweepRequest


def examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def add_command(commands, name: str, help_text: str, *example_lines: str,
                description: bool = False) -> argparse.ArgumentParser:
    """A subcommand with its examples under the options."""
    return commands.add_parser(name, help=help_text, description=help_text if description else None,
                               formatter_class=argparse.RawDescriptionHelpFormatter,
                               epilog=examples(*example_lines))


def add_run_command(commands, name: str, help_text: str, *example_lines: str,
                    run_optional: bool = False) -> argparse.ArgumentParser:
    """A command that reads one finished (or running) run directory."""
    cmd = add_command(commands, name, help_text, *example_lines)
    cmd.add_argument("run", nargs="?" if run_optional else None,
                     help="run directory, or a run name under --storage")
    cmd.add_argument("--storage", default=DEFAULT_STORAGE, help="where run names are looked up")
    return cmd


def add_noise_arguments(cmd: argparse.ArgumentParser) -> None:
    noise = cmd.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true", help="only errors and the final table")
    noise.add_argument("-v", "--verbose", action="store_true", help="also one line per evaluation")


def verbosity(args, default=1):
    """``-q`` 0, ``-v`` 2, else ``default``."""
    return 0 if args.quiet else 2 if args.verbose else default


def run_dir_of(args) -> Path:
    """The run directory a command names (a path, or a name under ``--storage``)."""
    from smctune.sweep.request import find_run_dir

    return find_run_dir(args.run, args.storage)


def add_sweep_arguments(cmd: argparse.ArgumentParser) -> None:
    """The choices of a sweep, shared by ``plan`` and ``sweep``; their names are ``SweepRequest``'s."""
    cmd.add_argument("task", help="task name (see `smctune ls tasks`)")
    cmd.add_argument("--methods", default="all", help="comma-separated method names, or `all` "
                     "(the paper's methods + dense; see `smctune ls methods`)")
    cmd.add_argument("--sparsities", help="comma-separated levels in (0, 1); default: the search "
                     "space grid (the paper's 1-0.8^k ladder)")
    cmd.add_argument("--seeds", type=int, default=1, help="number of seeds, 0..N-1 (1 to 1000; default 1)")
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
    cmd.add_argument("--max-concurrent", type=int, default=0, metavar="N",
                     help="at most this many trials at once, N >= 0 (default 0 = as many as resources "
                          "allow)")
    cmd.add_argument("--max-failures", type=int, default=2, metavar="N",
                     help="retries of a failed trial from its last checkpoint, N >= 0 (0 = never retry; "
                          "default 2)")
    cmd.add_argument("--storage", default=DEFAULT_STORAGE,
                     help=f"root directory of run directories (default ./{DEFAULT_STORAGE})")
    cmd.add_argument("--name", help="run name (default <task>-<timestamp>): one directory name under "
                     "--storage, not starting with '-' or '.', not dense_cache; rerunning a name "
                     "continues that sweep and skips its finished trials")
    cmd.add_argument("--mlflow-uri", help="MLflow tracking URI (default: sqlite file in the run dir)")
    cmd.add_argument("--shared-storage", action="store_true",
                     help="declare that --storage is mounted at the same path on every node of the "
                          "Ray cluster (needed on a multi-node cluster when smctune cannot see a "
                          "network filesystem there in /proc/mounts)")
    add_noise_arguments(cmd)


def sweep_request(args) -> SweepRequest:
    """The parsed flags of ``add_sweep_arguments`` as a ``SweepRequest`` (same names)."""
    choices = {name: getattr(args, name) for name in SweepRequest.__dataclass_fields__
               if name != "verbosity"}
    return SweepRequest(**choices, verbosity=verbosity(args))
