"""What the user asked for, checked and resolved into a ``SweepSpec`` and its ``SearchSpace``.

The same choices come from two places: the flags of ``smctune plan``/``sweep`` and the keyword
arguments of ``smctune.sweep.driver.sweep`` in a notebook. ``SweepRequest`` holds them under the
flags' names, in the flags' text form or as Python values (``sparsities=(0.2, 0.5)`` or
``"0.2,0.5"``), so both go through the one resolution below and fail with the same one-line errors.
Cheap checks come first; only the preset (``auto`` counts GPUs) may need Ray.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from smctune.errors import UserError

DEFAULT_STORAGE = "smctune_runs"
SEARCH_MODES = ("grid", "threshold")
MAX_SEEDS = 1000          # seeds 0..N-1; more is a typo, not a sweep (each seed is a full grid)
MAX_NAME_BYTES = 128      # a run name is one directory name on every filesystem smctune meets
# sweep.json fields a continued sweep may change: how it runs, not what it measures
# (train_examples is measured on the data each time; sweeps recorded before it existed have none)
VOLATILE_FIELDS = frozenset({"verbosity", "max_concurrent", "max_failures", "preset_reason",
                             "trials_per_cell", "asha", "search", "train_examples"})

Choices = Union[None, str, Sequence[Any]]


@dataclass(frozen=True)
class SweepRequest:
    """The choices of one sweep, named as the CLI's flags (``--data-dir`` -> ``data_dir``); the
    defaults are the CLI's. ``verbosity``: 0 = ``--quiet``, 1 = default, 2 = ``--verbose``."""

    task: str
    methods: Choices = "all"
    sparsities: Choices = None
    seeds: int = 1
    model: Choices = None
    folds: Choices = None
    preset: str = "auto"
    data_dir: Optional[Union[str, Path]] = None
    search_space: Optional[Union[str, Path]] = None
    keep_dense: Choices = None
    prune_only: Choices = None
    faithful: str = "paper"
    gpus_per_trial: Union[None, str, float] = None
    trials_per_cell: Union[None, str, int] = None
    search: str = "grid"
    asha: bool = False
    max_concurrent: int = 0
    max_failures: int = 2
    storage: Union[str, Path] = DEFAULT_STORAGE
    name: Optional[str] = None
    mlflow_uri: Optional[str] = None
    shared_storage: bool = False
    verbosity: int = 1

    @classmethod
    def of(cls, task: str, **choices) -> "SweepRequest":
        """A request from keyword arguments; an unknown keyword is a one-line error naming the valid ones."""
        valid = [f.name for f in dataclasses.fields(cls) if f.name != "task"]
        unknown = sorted(set(choices) - set(valid))
        if unknown:
            raise UserError(f"unknown sweep option '{unknown[0]}' (valid: {', '.join(valid)})")
        return cls(task, **choices)


def _text(value: Any) -> Optional[str]:
    """A choice in the CLI's text form: ``(0.2, 0.5)`` -> ``"0.2,0.5"``; text and None as they are."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(item) for item in value)
    return str(value)


def resolve(request: SweepRequest, *, for_plan: bool):
    """``(SweepSpec, SearchSpace)``: every choice is validated before Ray starts (a refused sweep
    costs no start-up and leaves nothing behind): cheap checks first, then those that depend on the
    preset, with the preset ``plan`` picks (torch counts the GPUs). ``auto``/``paper`` in a sweep
    then ask Ray, whose cluster may have other GPUs, and the preset's choices are checked again."""
    from smctune.catalog import registry
    from smctune.catalog.tunables import FAITHFUL
    from smctune.config.search_space import load_search_space
    from smctune.config.values import parse_keep_dense, parse_prune_only, parse_sparsities
    from smctune.sweep.cluster import visible_gpus
    from smctune.sweep.plan import resolve_preset
    from smctune.tracking.tracker import default_tracking_uri

    task = request.task
    registry.task_entry(task)
    methods = registry.parse_methods(_text(request.methods))
    registry.preset_entry(request.preset)
    if request.faithful not in FAITHFUL:
        raise UserError(f"unknown --faithful '{request.faithful}' (valid: {', '.join(FAITHFUL)})")
    _check_count("--seeds", request.seeds, 1, "number of seeds, 0..N-1", upper=MAX_SEEDS)
    _check_count("--max-concurrent", request.max_concurrent, 0, "0 = as many as resources allow")
    _check_count("--max-failures", request.max_failures, 0, "retries of a failed trial; 0 = never retry")
    run_dir = _run_dir_of(request)
    gpus_per_trial = parse_gpus_per_trial(_text(request.gpus_per_trial))
    search_space = str(request.search_space) if request.search_space else None
    space = load_search_space(task, search_space)
    sparsities_text = _text(request.sparsities)
    if sparsities_text is not None and not sparsities_text.strip():
        raise UserError("--sparsities is empty: give comma-separated levels in (0, 1), e.g. 0.2,0.36, or "
                        "leave the flag out for the search space's grid")
    sparsities = parse_sparsities(sparsities_text) if sparsities_text else space.sparsities
    keep_dense = parse_keep_dense(_text(request.keep_dense), space)
    prune_only = parse_prune_only(_text(request.prune_only), space)
    overlap = [name for entry in prune_only for name in entry.split("+") if name in keep_dense]
    if overlap:
        raise UserError(f"--prune-only group '{overlap[0]}' is also in --keep-dense: it cannot be pruned "
                        "and kept dense at once")
    data_dir = str(Path(request.data_dir).resolve()) if request.data_dir else None
    if data_dir and not Path(data_dir).is_dir():
        raise UserError(f"--data-dir {request.data_dir} is not a directory")
    mlflow_uri = request.mlflow_uri or default_tracking_uri(run_dir)
    if request.search not in SEARCH_MODES:
        raise UserError(f"unknown --search '{request.search}' (valid: {', '.join(SEARCH_MODES)})")
    if prune_only and request.search != "grid":
        raise UserError("--prune-only runs every level of every group: use it with --search grid")
    chosen = dict(
        task=task, methods=methods, sparsities=sparsities, seeds=tuple(range(request.seeds)),
        name=run_dir.name, run_dir=str(run_dir), mlflow_uri=mlflow_uri, data_dir=data_dir,
        keep_dense=keep_dense, max_concurrent=request.max_concurrent, max_failures=request.max_failures,
        search_space_file=search_space or space.source, verbosity=request.verbosity,
        faithful=request.faithful, gpus_per_trial=gpus_per_trial, asha=bool(request.asha),
        search=request.search, prune_only=prune_only)
    # every choice is checked first with the preset ``plan`` would pick, which starts no Ray (torch
    # counts the GPUs) ...
    gpus = visible_gpus(start_ray=False) if request.preset in ("auto", "paper") else 0.0
    if request.preset == "paper" and gpus <= 0:  # plan a GPU sweep from a laptop, or ask Ray below
        preset, reason = "paper", "requested; no GPU visible here"
    else:
        preset, reason = resolve_preset(request.preset, gpus)
    spec = _with_preset(request, space, chosen, preset, reason)
    if not for_plan and request.preset in ("auto", "paper"):
        # ... and a sweep then asks Ray, which may see other GPUs (a cluster's): checked again
        preset, reason = resolve_preset(request.preset, visible_gpus(start_ray=True))
        spec = _with_preset(request, space, chosen, preset, reason)
    return spec, space


def _with_preset(request: SweepRequest, space, chosen: dict, preset: str, reason: str):
    """The ``SweepSpec`` of ``chosen`` under ``preset``, with the choices that depend on it
    (architectures, folds, the tuning budget) checked."""
    from smctune.catalog import registry
    from smctune.config.specs import SweepSpec

    task, prune_only = chosen["task"], chosen["prune_only"]
    space.preset(preset)
    models = parse_models(_text(request.model), space)
    folds = parse_folds(_text(request.folds), registry.load_task(task).folds(preset, chosen["data_dir"]), task)
    trials_per_cell = parse_trials_per_cell(_text(request.trials_per_cell), space, preset)
    budget = trials_per_cell or space.search_decl(preset).trials_per_cell
    if request.asha and budget < 2:
        raise UserError("--asha compares tunings within a cell, so it needs --trials-per-cell 2 or more "
                        "(and a search: block declaring what to tune)")
    if prune_only and budget > 1:
        raise UserError("--prune-only measures each group at the method's default settings: it does not "
                        "combine with --trials-per-cell > 1")
    spec = SweepSpec(**chosen, preset=preset, preset_reason=reason, models=models, folds=folds,
                     trials_per_cell=trials_per_cell)
    check_continues(spec)
    return spec


def _check_count(flag: str, value: Any, lowest: int, meaning: str, upper: Optional[int] = None) -> None:
    """A whole-number setting in range (a notebook may pass anything, the CLI passes ints)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{flag} must be a whole number >= {lowest} ({meaning}), got {value!r}")
    if value < lowest or (upper is not None and value > upper):
        bound = f"in {lowest}..{upper}" if upper is not None else f">= {lowest}"
        raise UserError(f"{flag} must be {bound} ({meaning}), got {value}")


def check_continues(spec) -> None:
    """A name whose run directory already holds a sweep continues it only with the same settings:
    refused here, before Ray starts, rather than when ``sweep.json`` is written."""
    from smctune.rundir.layout import RunDir

    if not RunDir(spec.run_dir).sweep_file.exists():
        return
    previous = read_recorded_spec(spec.run_dir)
    differs = [f for f in spec.__dataclass_fields__ if f not in VOLATILE_FIELDS
               and getattr(previous, f) != getattr(spec, f)]
    if differs:
        raise UserError(f"run directory {spec.run_dir} holds a sweep with different {', '.join(differs)}; "
                        "use another --name (or the same arguments to continue it)")


def _run_dir_of(request: SweepRequest) -> Path:
    """``<storage>/<name>``, the name defaulting to ``<task>-<timestamp>``."""
    if "://" in str(request.storage):
        raise UserError(f"--storage {request.storage}: object-store URIs are not supported yet; use a "
                        "directory every node mounts at the same path (NFS or EFS, Filestore, or the "
                        "bucket mounted with gcsfuse, mountpoint-s3 or s3fs; on one machine, local disk)")
    storage = Path(request.storage).expanduser().resolve()
    if storage.exists() and not storage.is_dir():
        raise UserError(f"--storage {request.storage} is not a directory")
    name = f"{request.task}-{time.strftime('%Y%m%d-%H%M%S')}" if request.name is None else request.name
    check_run_name(name)
    run_dir = storage / name
    if run_dir.is_symlink():
        raise UserError(f"--name {name}: {run_dir} is a symbolic link; a run directory is never followed "
                        "out of --storage (remove the link or choose another --name)")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--name {name}: {run_dir} exists and is not a directory")
    return run_dir


def check_run_name(name: Any) -> str:
    """A run name is one safe directory name under ``--storage``: not empty, no path separator,
    control or invisible character, not ``.``/``..`` or hidden, not an option (``-x``), not too long,
    and not a name the storage root keeps for itself (the shared dense cache)."""
    from smctune.rundir.layout import DENSE_CACHE_DIRNAME

    rule = "a run name is one directory name: letters, digits, '-', '_', '.'"
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"--name is empty ({rule}; leave the flag out for <task>-<timestamp>)")
    bad = next((c for c in name if c in "/\\" or not c.isprintable()), None)
    if bad is not None:
        raise UserError(f"--name {name!r}: {bad!r} is not allowed ({rule})")
    if name != name.strip() or name[0] in "-.":
        raise UserError(f"--name {name!r}: must not start with '-', '.' or a space, nor end with a space "
                        f"({rule})")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise UserError(f"--name is {len(name.encode('utf-8'))} bytes long: at most {MAX_NAME_BYTES}")
    if name in (DENSE_CACHE_DIRNAME,):
        raise UserError(f"--name {name}: reserved (the storage root's shared dense cache); choose another")
    return name


def find_run_dir(run: Union[str, Path], storage: Union[str, Path] = DEFAULT_STORAGE) -> Path:
    """A run directory given as a path, or as a run name under ``storage``."""
    path = Path(run)
    if not path.is_dir():
        candidate = Path(storage) / run
        path = candidate if candidate.is_dir() else path
    if not path.is_dir():
        raise UserError(f"no run directory '{run}' (looked in . and {storage}/)")
    return path.resolve()


def read_recorded_spec(run_dir: Union[str, Path]):
    """The ``SweepSpec`` a run directory was started with, checked key by key
    (``config.recorded``), and placed where the directory is now: a run directory moved or copied
    elsewhere names its old place in ``sweep.json``, and so does its default MLflow store."""
    from smctune.config.recorded import read_sweep_spec
    from smctune.rundir.layout import RunDir
    from smctune.tracking.source import relocated

    return relocated(read_sweep_spec(RunDir(run_dir).sweep_file), run_dir)


def recorded_search_space(run_dir: Union[str, Path], spec):
    """The search space a recorded sweep ran with: the copy of the resolved file in its run
    directory when the sweep wrote one, else the file ``sweep.json`` names (the packaged one, or
    the user's ``--search-space`` if it still exists). A user's file that is gone is refused, never
    silently replaced by the packaged one: the trials would not be the ones recorded."""
    from smctune.config.search_space import load_search_space, sweep_search_space

    copy = search_space_copy_path(run_dir)
    if copy.is_file():
        return load_search_space(spec.task, str(copy))
    source = spec.search_space_file
    if source and source != packaged_source(spec.task) and not Path(source).is_file():
        raise UserError(f"{run_dir}: the sweep's search space {source} no longer exists and the run "
                        f"directory holds no copy of it ({copy.name}); put the file back")
    return sweep_search_space(spec)


def search_space_copy_path(run_dir: Union[str, Path]) -> Path:
    """Where a run directory keeps the copy of its resolved search space (``RunDir.search_space_file``)."""
    from smctune.rundir.layout import RunDir

    return RunDir(run_dir).search_space_file


def write_search_space_copy(run_dir: Union[str, Path], spec) -> Optional[Path]:
    """Keep the resolved search space in the run directory (once: a resumed sweep reads it back
    from there), so ``resume``, ``status`` and ``report`` never depend on the user's file, nor on
    the packaged one of whatever smctune version is installed later. None when it is already there."""
    from smctune.rundir.layout import write_atomic

    copy = search_space_copy_path(run_dir)
    if copy.exists():
        return None
    source = spec.search_space_file
    path = None if not source or source == packaged_source(spec.task) else source
    return write_atomic(copy, resolved_space_text(spec.task, path))


def packaged_source(task: str) -> str:
    """How ``SearchSpace.source`` names a packaged search space."""
    return f"search_spaces/{task}.yaml"


def resolved_space_text(task: str, path: Optional[str]) -> str:
    """The YAML of a search space with its ``extends:`` chain merged in: what the run directory's
    copy holds, so it reads back alone, whatever becomes of the files it was built from."""
    import yaml

    from smctune.config.extends import read_search_space

    file = read_search_space(task, path)
    return (f"# the resolved search space of this sweep: {file.label}\n"
            + yaml.safe_dump({"task": task, **file.data}, sort_keys=False, allow_unicode=True))


# ------------------------------------------------------------------------------------ one value each

def _parse_number(flag: str, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{flag} '{text}' is not a number (expected {what})") from None
    if not math.isfinite(value):
        raise UserError(f"{flag} must be a finite number ({what}), got {text}")
    return value


def parse_gpus_per_trial(text: Optional[str]) -> Optional[float]:
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


def parse_step_seconds(text: Optional[str]) -> Optional[float]:
    """``plan --step-seconds``: the seconds per training step the estimate assumes."""
    if text is None:
        return None
    what = "seconds per training step > 0, e.g. 0.35"
    value = _parse_number("--step-seconds", text, what)
    if value <= 0:
        raise UserError(f"--step-seconds must be > 0 ({what}), got {text}")
    return value


def parse_trials_per_cell(text: Optional[str], space, preset: str) -> int:
    """``--trials-per-cell``: a whole number >= 1 (0 = the search space's budget); more than one
    needs a ``search:`` block declaring what to tune."""
    from smctune.config.search_decl import check_trials_per_cell

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


def parse_models(text: Optional[str], space) -> tuple:
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


def parse_folds(text: Optional[str], available: tuple, task: str) -> tuple:
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


# ------------------------------------------------------------------------------------ the data

def validate_data(task, spec, space):
    """Check the family's model settings of every architecture, then parse the data of every fold
    the sweep runs (one split when the task has no folds). Returns the spec with the training
    split's size recorded (``train.epochs`` is counted in it), the first fold's report, and what
    the task has to say about its data under these settings (``Task.data_notes``, optional: e.g.
    how many protein sequences are cropped to the model's length)."""
    from smctune.train import optim

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
