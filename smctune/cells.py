"""Search within a cell: Optuna (TPE) over a method's declared tunables inside each (method, sparsity)
cell of the grid, with the whole sweep in one Ray Tune ``Tuner``.

Vocabulary:

* a **member** is one planned trial (``TrialSpec``): method x sparsity x seed [x fold] [x architecture];
* a **cell** is (architecture, method, level): its members differ only in seed and fold. Sparsity,
  seed and fold stay a grid;
* a **tuning** is one configuration of the cell's declared tunables. Tuning 0 is the configuration
  the sweep runs without a search (the paper's defaults after the search space's and preset's
  ``methods:`` blocks): ``trials_per_cell: 1`` is exactly today's sweep, and raising the budget later
  reuses the finished default trials. When the declared ranges do not contain that configuration
  (presets rescale step counts: smoke's GMP ``frequency`` is 4, not 500) the study cannot hold it:
  every tuning is then sampled and they are numbered from 1 (``messages`` says so).

One Optuna study per tuned cell (study name = the cell key). A study trial is one tuning evaluated on
*every* member of the cell: the searcher emits one Tune trial per (seed, fold) with the same tunables
and tells the study the mean over them when all have ended, the value the report computes for a cell.
Tuning on one seed and reporting the seed mean would select on noise of that seed only.

``search:`` block of a search space (parsed by ``parse_search``)::

    search:
      trials_per_cell: 1          # default; --trials-per-cell overrides
      metric: best                # best | final: what the study maximizes
      methods:
        gmp: {frequency: {choices: [500, 1000, 4000]}, start_fraction: {low: 0.0, high: 0.3}}
        omp_rigl: {update_every: {low: 100, high: 1000, log: true}, alpha: {low: 0.1, high: 0.5}}

Persistence: the studies live in ``<run_dir>/optuna.journal`` (Optuna's ``JournalStorage`` with the
file backend), and every member's outcome is written to its study trial (a user attribute) the moment
Tune reports it, so a new ``CellSearcher`` on the same run directory continues every study: finished
study trials are not asked again, a study trial that was running gets only its missing members
re-emitted, and the budget counts what was already spent.

``CellASHA`` is comparative early stopping that only ever compares tunings of the same (architecture,
method, level, seed, fold): it never stops a trial because of a trial of another sparsity, method,
seed or fold.

Importing this module stays cheap (no ray, no optuna): ``CellSearcher`` and ``CellASHA`` subclass Ray
classes and are built on first access (``from smctune.cells import CellSearcher`` imports Ray then).
"""
from __future__ import annotations

import json
import math
import os
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from .config import level_label, row_label, trial_id_from
from .errors import UserError
from .trial_order import TrialLengths, planned_work
from .tunables import Tunable

SEARCH_KEYS = ("trials_per_cell", "metric", "methods")
PARAM_KEYS = ("low", "high", "log", "choices")
METRICS = ("best", "final")
# Tunables that decide which trials exist (not settings within a cell): N:M fixes the sparsity, the
# IMP rate fixes the ladder of levels. They are axes of the plan, set under ``methods:``.
GRID_TUNABLES = {"pattern": "an N:M pattern fixes the sparsity, so it decides which trials exist",
                 "rate": "the IMP rate decides the ladder of levels, so it decides which trials exist"}
STORAGE_FILE = "optuna.journal"
MAX_INFEASIBLE = 100          # suggestions in a row rejected by ``validate`` before a cell gives up
FINISHED = "FINISHED"         # == ray.tune.search.Searcher.FINISHED

# member outcomes
OK, STOPPED, FAILED = "ok", "stopped", "failed"


# ------------------------------------------------------------------------------------ declaration

@dataclass(frozen=True)
class ParamDecl:
    """One searched tunable: a range (``low``..``high``, inclusive, optionally ``log``) or ``choices``.

    ``kind`` is ``int`` or ``float`` for a range and ``choice`` for a list of values (numbers too:
    ``frequency: {choices: [500, 1000, 4000]}``)."""

    name: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    choices: tuple = ()

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return any(_same(value, choice) for choice in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        return self.low <= value <= self.high

    def distribution(self):
        """The Optuna distribution (imports optuna)."""
        from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                          IntDistribution)

        if self.kind == "choice":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def to_dict(self) -> dict:
        if self.kind == "choice":
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class SearchDecl:
    """The parsed ``search:`` block: budget, metric and, per method, the searched tunables."""

    trials_per_cell: int = 1
    metric: str = "best"
    methods: Mapping[str, Mapping[str, ParamDecl]] = field(default_factory=dict)
    source: str = ""

    def space(self, method: str) -> dict[str, ParamDecl]:
        return dict(self.methods.get(method) or {})

    def to_dict(self) -> dict:
        return {"trials_per_cell": self.trials_per_cell, "metric": self.metric,
                "methods": {m: {n: p.to_dict() for n, p in params.items()}
                            for m, params in self.methods.items()}}


def check_trials_per_cell(value: Any, where: str = "--trials-per-cell") -> int:
    """A budget of trials per cell: a whole number >= 1 (1 = the defaults only, no search)."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise UserError(f"{where}: expected a whole number >= 1, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where}: expected a whole number >= 1 (1 = the paper's defaults, no search), "
                        f"got {value!r}")
    return value


def parse_search(block: Any, method_tunables: Mapping[str, Mapping[str, Tunable]],
                 source: str = "search space") -> SearchDecl:
    """Validate a search space's ``search:`` block (``None``: no search) against the methods'
    tunables: every declared name must be a searchable tunable of its method and every range or
    choice must be valid for that tunable. Problems raise a one-line ``UserError`` naming the key."""
    if block is None:
        return SearchDecl(source=source)
    if not isinstance(block, dict):
        raise UserError(f"{source}: search: expected a mapping with keys {', '.join(SEARCH_KEYS)}, "
                        f"got {type(block).__name__}")
    for key in block:
        if key not in SEARCH_KEYS:
            raise UserError(f"{source}: unknown key '{key}' at search (valid: {', '.join(SEARCH_KEYS)})")
    budget = check_trials_per_cell(block.get("trials_per_cell", 1), f"{source}: search.trials_per_cell")
    metric = block.get("metric", "best")
    if metric not in METRICS:
        raise UserError(f"{source}: search.metric = {metric!r} is not valid (valid: {', '.join(METRICS)})")
    methods_block = block.get("methods") or {}
    if not isinstance(methods_block, dict):
        raise UserError(f"{source}: search.methods: expected a mapping of method names to tunables")
    methods = {}
    for method, params in methods_block.items():
        if method not in method_tunables:
            raise UserError(f"{source}: unknown method '{method}' at search.methods "
                            f"(valid: {', '.join(sorted(method_tunables))})")
        where = f"search.methods.{method}"
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise UserError(f"{source}: {where}: expected a mapping of tunable names to "
                            "{low, high[, log]} or {choices}")
        tunables = method_tunables[method]
        searchable = sorted(name for name in tunables if name not in GRID_TUNABLES)
        declared = {}
        for name, spec in params.items():
            if name in GRID_TUNABLES and name in tunables:
                raise UserError(f"{source}: {where}.{name} cannot be searched: {GRID_TUNABLES[name]} "
                                f"(set it under methods.{method})")
            if name not in tunables:
                raise UserError(f"{source}: unknown key '{name}' at {where} "
                                f"(valid: {', '.join(searchable) or 'none'})")
            declared[name] = _parse_param(name, spec, tunables[name], f"{source}: {where}.{name}")
        if declared:
            methods[method] = declared
    return SearchDecl(budget, metric, methods, source)


def _parse_param(name: str, spec: Any, tunable: Tunable, where: str) -> ParamDecl:
    if not isinstance(spec, dict):
        raise UserError(f"{where}: expected {{low: .., high: ..}} or {{choices: [..]}}, got {spec!r} "
                        f"(valid values: {tunable.valid_text()})")
    for key in spec:
        if key not in PARAM_KEYS:
            raise UserError(f"{where}: unknown key '{key}' (valid: {', '.join(PARAM_KEYS)})")
    if "choices" in spec:
        if set(spec) - {"choices"}:
            raise UserError(f"{where}: give either choices or low/high, not both")
        values = spec["choices"]
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}.choices: expected a non-empty list, got {values!r}")
        for value in values:
            tunable.check(value, f"{where}.choices")
        unique = []
        for value in values:
            if not any(_same(value, seen) for seen in unique):
                unique.append(value)
        if len(unique) != len(values):
            raise UserError(f"{where}.choices: {values!r} lists a value twice")
        return ParamDecl(name, "choice", choices=tuple(values))
    if tunable.kind not in ("int", "float"):
        raise UserError(f"{where}: a {tunable.kind} tunable is searched with choices: [..] "
                        f"(valid: {tunable.valid_text()})")
    missing = [key for key in ("low", "high") if key not in spec]
    if missing:
        raise UserError(f"{where}: '{missing[0]}' is required for a range (or give choices: [..])")
    low, high = (tunable.check(spec[key], f"{where}.{key}") for key in ("low", "high"))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{where}.log: expected true or false, got {log!r}")
    if not low < high:
        raise UserError(f"{where}: low {low} must be below high {high}")
    if log and low <= 0:
        raise UserError(f"{where}: log: true needs low > 0 (got {low})")
    return ParamDecl(name, tunable.kind, low=low, high=high, log=log)


def _same(a, b) -> bool:
    """Equal and of the same kind (``True`` is not the choice ``1``)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool) and (a is None) == (b is None)


# ------------------------------------------------------------------------------------ keys and ids

def _arch(trial: Mapping) -> str:
    return (trial.get("model") or {}).get("arch") or ""


def cell_key(trial: Mapping) -> str:
    """``[arch/]method/level`` of a TrialSpec dict: the study name of its cell."""
    arch = _arch(trial)
    return f"{arch + '/' if arch else ''}{_row(trial)}/{level_label(trial)}"


def _row(trial: Mapping) -> str:
    return row_label(trial["method"], trial.get("group") or "")


def member_key(trial: Mapping) -> tuple:
    """What ``CellASHA`` compares within: the cell plus seed and fold (never across them)."""
    return (trial.get("task"), _arch(trial), _row(trial), level_label(trial), trial.get("seed"),
            trial.get("fold"))


def _base_trial_id(trial: Mapping) -> str:
    """The trial id of a planned trial dict at tuning 0 (the member ids and the keys of ``done``)."""
    return trial_id_from({**trial, "tuning": 0})


def tuned_trial_id(base_id: str, tuning: int) -> str:
    """The trial id of tuning ``tuning`` of a planned trial: tuning 0 keeps the planned id."""
    return f"{base_id}-t{tuning}" if tuning else base_id


def trial_id_of(config: Mapping) -> str:
    """The smctune trial id of a Tune config emitted by ``CellSearcher`` (``TrialSpec.trial_id``,
    which carries ``-t<k>`` for tuning k > 0): for Tune's ``trial_name_creator`` and
    ``trial_dirname_creator``, and the driver's records."""
    return trial_id_from(config["trial"])


def _finite(value) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _stable_int(*parts) -> int:
    return zlib.crc32(json.dumps(parts, sort_keys=True, default=str).encode()) & 0x7FFFFFFF


# ------------------------------------------------------------------------------------ the searcher

class _Cell:
    """One cell's bookkeeping (derivable from the storage plus the searcher's in-flight map)."""

    def __init__(self, key: str, method: str):
        self.key, self.method = key, method
        self.members: list[dict] = []         # planned TrialSpec dicts, in plan order
        self.member_ids: list[str] = []       # their (tuning-0) trial ids
        self.space: dict[str, ParamDecl] = {}
        self.tuned = False
        self.study = None
        # keyed by study trial number (0 for an untuned cell); tuning = number + offset
        self.queue: deque = deque()           # (number, member index) still to emit
        self.params: dict[int, dict] = {}     # number -> searched values ({} = planned tunables)
        self.results: dict[int, dict] = {}    # number -> member index -> (outcome, value)
        self.trials: dict[int, Any] = {}      # number -> optuna Trial or _StoredTrial (open study trials)
        self.open: set[int] = set()           # study trials asked and not told yet
        self.emitted = 0                      # study trials spent from the budget
        self.inflight = 0                     # Tune trials running now
        self.exhausted = False                # validate() rejected MAX_INFEASIBLE suggestions
        self.offset = 0                       # tuning = study trial number + offset (see _load_study)
        self.work = 1.0                       # trial_order.planned_work of its members

    def finished(self, budget: int) -> bool:
        if self.queue or self.inflight or self.open:
            return False
        return not self.tuned or self.exhausted or self.emitted >= budget


class CellSearchCore:
    """The logic of ``CellSearcher`` without Ray (Ray's ``Searcher`` is mixed in by ``CellSearcher``).

    Args:
        trials: the planned ``TrialSpec`` dicts of one Tuner (every member of every cell, as
            ``plan_trials`` makes them, ``TrialSpec.to_dict()``).
        decl: the search space's ``SearchDecl`` (which methods are searched, over what, the metric).
        trials_per_cell: the budget of tunings per cell (``--trials-per-cell``); None = the
            declaration's. Cells whose method declares nothing, or a budget of 1, run the planned
            trials only (the defaults), without Optuna.
        seed: seeds every study's TPE sampler (mixed with the cell key and the study's length, so
            cells differ and a resumed study does not replay its first draws).
        storage_dir: the run directory; the studies live in ``<storage_dir>/optuna.journal``.
        done: finished trial id -> value (``records.finished_values``). Planned trials of untuned cells in
            it are not emitted; in tuned cells tuning 0 (the defaults) takes its members' values from
            it instead of running them again. Tunings > 0 are resumed from the storage alone.
        validate: ``validate(method, tunables)`` raises ``UserError`` for a combination that cannot
            run (e.g. GMP ``start_fraction >= end_fraction``); such a suggestion is told to its study
            as failed (user attribute ``infeasible``) and does not spend the budget.
        max_concurrent_per_cell: study trials of one cell in flight at once (TPE's constant liar
            spreads them); each is (seeds x folds) Tune trials. Cells run side by side regardless.
    """

    def __init__(self, trials: Sequence[Mapping], decl: SearchDecl, trials_per_cell: Optional[int] = None,
                 *, seed: int = 0, storage_dir: str | os.PathLike, done: Optional[Mapping] = None,
                 validate: Optional[Callable[[str, dict], None]] = None, max_concurrent_per_cell: int = 2):
        self._args = dict(trials=[dict(t) for t in trials], decl=decl, trials_per_cell=trials_per_cell,
                          seed=seed, storage_dir=str(storage_dir), done=dict(done or {}),
                          validate=validate, max_concurrent_per_cell=max_concurrent_per_cell)
        self.decl = decl
        self.budget = check_trials_per_cell(decl.trials_per_cell if trials_per_cell is None
                                            else trials_per_cell)
        if not isinstance(max_concurrent_per_cell, int) or max_concurrent_per_cell < 1:
            raise UserError(f"max_concurrent_per_cell: expected a whole number >= 1, "
                            f"got {max_concurrent_per_cell!r}")
        self.seed = seed
        self.storage_path = Path(storage_dir) / STORAGE_FILE
        self.done = dict(done or {})
        self.validate = validate
        self.max_concurrent_per_cell = max_concurrent_per_cell
        self.messages: list[str] = []         # notes for the driver to print (e.g. an exhausted cell)
        self._inflight: dict[str, tuple] = {}  # Tune trial id -> (cell index, number, member index)
        self._finished_untuned: set = set()   # (cell key, member id) finished in this session
        self._cursor = 0
        self._lengths = TrialLengths()
        self._storage = None
        self._cells = self._group(self._args["trials"])
        self._load()

    # -------------------------------------------------------------------- construction

    def _group(self, trials) -> list[_Cell]:
        cells: dict[str, _Cell] = {}
        for trial in trials:
            key = cell_key(trial)
            cell = cells.setdefault(key, _Cell(key, trial["method"]))
            member_id = _base_trial_id(trial)
            if member_id in cell.member_ids:
                raise ValueError(f"trial {member_id} is planned twice")
            cell.members.append(trial)
            cell.member_ids.append(member_id)
        for cell in cells.values():
            cell.work = planned_work(cell.members[0])
            cell.space = self.decl.space(cell.method)
            cell.tuned = bool(cell.space) and self.budget > 1
        return list(cells.values())

    def _load(self) -> None:
        """(Re)build every cell's state from the storage, ``done`` and this session's finished set."""
        for cell in self._cells:
            cell.queue.clear()
            cell.params, cell.results, cell.trials = {}, {}, {}
            cell.open, cell.emitted, cell.inflight, cell.exhausted = set(), 0, 0, False
            if cell.tuned:
                self._load_study(cell)
            else:
                cell.params[0] = {}
                cell.queue.extend((0, i) for i, member_id in enumerate(cell.member_ids)
                                  if member_id not in self.done
                                  and (cell.key, member_id) not in self._finished_untuned)

    def _open_storage(self):
        if self._storage is None:
            import optuna
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self.storage_path.parent.mkdir(parents=True, exist_ok=True)
            _repair_journal(self.storage_path)
            self._storage = JournalStorage(JournalFileBackend(str(self.storage_path)))
        return self._storage

    def _identity(self, cell: _Cell) -> dict:
        return {"space": {name: p.to_dict() for name, p in sorted(cell.space.items())},
                "members": list(cell.member_ids), "metric": self.decl.metric,
                "planned": {name: cell.members[0]["tunables"].get(name) for name in sorted(cell.space)}}

    def _load_study(self, cell: _Cell) -> None:
        import optuna
        from optuna.trial import TrialState

        outside = {name: cell.members[0]["tunables"].get(name) for name, param in cell.space.items()
                   if not all(param.contains(m["tunables"].get(name)) for m in cell.members)}
        # Tuning 0 is the planned configuration when the declared space contains it (the anchor of
        # the study, reusable from a run without search); else every tuning is sampled and they are
        # numbered from 1, so no tuned trial ever takes a planned trial's id.
        cell.offset = 1 if outside else 0
        if outside:
            self._note(
                f"cell {cell.key}: the planned {cell.method} "
                f"{', '.join(f'{k} {v!r}' for k, v in outside.items())} lies outside "
                f"search.methods.{cell.method}; its study does not include the defaults "
                f"(tunings are numbered from t1)")
        storage = self._open_storage()
        study = optuna.create_study(storage=storage, study_name=cell.key, direction="maximize",
                                    load_if_exists=True, sampler=self._sampler(cell, 0))
        identity = json.loads(json.dumps(self._identity(cell), default=str))
        recorded = study.user_attrs.get("smctune")
        if recorded is None:
            study.set_user_attr("smctune", identity)
        elif recorded != identity:
            changed = [key for key in identity if recorded.get(key) != identity[key]]
            raise UserError(
                f"{self.storage_path}: the study of cell {cell.key} was started with a different "
                f"{', '.join(changed)} (recorded {json.dumps({k: recorded.get(k) for k in changed})}); "
                f"a study only continues with the same search, seeds and folds: use a new --name")
        trials = study.get_trials(deepcopy=False)
        study.sampler = self._sampler(cell, len(trials))
        cell.study = study
        if not trials and not cell.offset:  # the configuration the sweep runs without a search
            study.enqueue_trial(self._defaults(cell), user_attrs={"defaults": True})
        for frozen in trials:
            if frozen.state == TrialState.RUNNING and set(cell.space) - set(frozen.params):
                # the driver died inside ask(), before every value was drawn: nothing ran with it
                _StoredTrial(storage, cell.key, frozen.number).set_user_attr("infeasible", "interrupted ask")
                study.tell(frozen.number, state=TrialState.FAIL)
                continue
            if frozen.state == TrialState.WAITING:
                continue
            if frozen.state == TrialState.FAIL and frozen.user_attrs.get("infeasible"):
                continue
            cell.emitted += 1
            if frozen.state != TrialState.RUNNING:
                continue
            number = frozen.number
            cell.params[number] = {name: frozen.params[name] for name in cell.space}
            cell.trials[number] = _StoredTrial(storage, cell.key, number)
            cell.open.add(number)
            cell.results[number] = {}
            for index, member_id in enumerate(cell.member_ids):
                outcome = frozen.user_attrs.get(f"m:{member_id}")
                if outcome is not None:
                    cell.results[number][index] = tuple(outcome)
            self._queue_members(cell, number)

    def _note(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)

    def _defaults(self, cell: _Cell) -> dict:
        return {name: cell.members[0]["tunables"][name] for name in cell.space}

    def _sampler(self, cell: _Cell, history: int):
        import optuna

        startup = max(1, min(10, self.budget // 3))
        return optuna.samplers.TPESampler(seed=_stable_int(self.seed, cell.key, history),
                                          n_startup_trials=startup, constant_liar=True)

    # -------------------------------------------------------------------- Searcher protocol

    def suggest(self, trial_id: str):
        """The next Tune trial: the longest expected first (trial_order.py), round-robin over cells
        of equal length; None while waiting for results; FINISHED."""
        count = len(self._cells)
        rotation = [(self._cursor + offset) % count for offset in range(count)]
        by_length = sorted(rotation, reverse=True, key=lambda index: self._lengths.priority(
            self._cells[index].method, self._cells[index].work))
        for index in by_length:
            cell = self._cells[index]
            item = self._take(cell)
            if item is None:
                continue
            self._cursor = (index + 1) % count
            number, member = item
            self._inflight[trial_id] = (index, number, member)
            cell.inflight += 1
            self._lengths.started(cell.method)
            return self._config(cell, number, member)
        if all(cell.finished(self.budget) for cell in self._cells):
            return FINISHED
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        entry = self._inflight.pop(trial_id, None)
        if entry is None:
            return  # not ours (or already counted)
        index, number, member = entry
        cell = self._cells[index]
        cell.inflight -= 1
        if result and not error and result.get("level_done", True):
            self._lengths.observe(cell.method, cell.work, _finite(result.get("time_total_s")))
        if not cell.tuned:
            self._finished_untuned.add((cell.key, cell.member_ids[member]))
            return
        outcome = self._outcome(result, error)
        cell.results.setdefault(number, {})[member] = outcome
        trial = cell.trials.get(number)
        if trial is not None:
            trial.set_user_attr(f"m:{cell.member_ids[member]}", list(outcome))
        self._maybe_tell(cell, number)

    # -------------------------------------------------------------------- internals

    def _take(self, cell: _Cell):
        while True:
            if cell.queue:
                return cell.queue.popleft()
            if (not cell.tuned or cell.exhausted or cell.emitted >= self.budget
                    or len(cell.open) >= self.max_concurrent_per_cell):
                return None
            self._ask(cell)  # queues the new tuning's members (none if all were known already)

    def _ask(self, cell: _Cell) -> None:
        """Ask the cell's study for its next tuning and queue its members. A suggestion ``validate``
        rejects is told as failed (TPE ignores failed trials, so it learns nothing from it and tends to
        propose the same region again); the retries draw at random from the declared space until one
        is feasible (rejection sampling), then TPE takes over again for the next tuning."""
        import optuna
        from optuna.trial import TrialState

        distributions = {name: param.distribution() for name, param in cell.space.items()}
        tpe = cell.study.sampler
        try:
            for attempt in range(MAX_INFEASIBLE):
                if attempt == 1:
                    cell.study.sampler = optuna.samplers.RandomSampler(
                        seed=_stable_int(self.seed, cell.key, len(cell.study.trials), "random"))
                trial = cell.study.ask(distributions)
                params = {name: _plain(trial.params[name]) for name in cell.space}
                if self.validate is not None:
                    try:
                        for member in cell.members:
                            self.validate(cell.method, {**member["tunables"], **params})
                    except UserError as err:
                        trial.set_user_attr("infeasible", str(err))
                        cell.study.tell(trial, state=TrialState.FAIL)
                        continue
                number = trial.number
                cell.emitted += 1
                cell.params[number] = params
                cell.trials[number] = trial
                cell.open.add(number)
                cell.results[number] = {}
                self._queue_members(cell, number)
                return
        finally:
            cell.study.sampler = tpe
        cell.exhausted = True
        self._note(f"cell {cell.key}: {MAX_INFEASIBLE} suggestions in a row were rejected by "
                             f"validation; its search stops after {cell.emitted} tunings")

    def _queue_members(self, cell: _Cell, number: int) -> None:
        """Queue the members of an open tuning that have no outcome yet; tuning 0 takes finished
        planned trials from ``done``."""
        results = cell.results[number]
        credit = number == 0 and not cell.offset and cell.params[number] == self._defaults(cell)
        for index, member_id in enumerate(cell.member_ids):
            if index in results:
                continue
            if credit and _finite(self.done.get(member_id)) is not None:
                results[index] = (OK, _finite(self.done[member_id]))
                cell.trials[number].set_user_attr(f"m:{member_id}", list(results[index]))
                continue
            cell.queue.append((number, index))
        self._maybe_tell(cell, number)

    def _maybe_tell(self, cell: _Cell, number: int) -> None:
        """Tell the study once every member of the tuning has an outcome: the mean when all ran to
        the end; pruned (the mean as its last intermediate value) when early stopping ended one;
        failed when one failed or has no value."""
        from optuna.trial import TrialState

        results = cell.results.get(number, {})
        if number not in cell.open or len(results) < len(cell.members):
            return
        outcomes = [results[i] for i in range(len(cell.members))]
        trial = cell.trials.pop(number)
        cell.open.discard(number)
        if any(status == FAILED for status, _ in outcomes):
            cell.study.tell(number, state=TrialState.FAIL)
            return
        mean = sum(value for _, value in outcomes) / len(outcomes)
        if any(status == STOPPED for status, _ in outcomes):
            trial.report(mean, 0)
            cell.study.tell(number, state=TrialState.PRUNED)
        else:
            cell.study.tell(number, mean)

    def _outcome(self, result: Optional[dict], error: bool) -> tuple:
        if error or not result:
            return (FAILED, None)
        key = "best" if self.decl.metric == "best" else result.get("metric_name")
        value = _finite(result.get(key)) if key else None
        if value is None:
            return (FAILED, None)
        # Tune marks every last result ``done``, early-stopped or not; smctune's trainable says
        # ``level_done`` on the evaluation that ends the trial, so a last result without it was cut
        # short by the scheduler. (A trainable that never reports ``level_done`` is taken as finished.)
        ran_out = bool(result.get("level_done", True))
        return (OK if ran_out else STOPPED, value)

    def _config(self, cell: _Cell, number: int, member: int) -> dict:
        tuning = number + cell.offset
        trial = dict(cell.members[member])
        trial["tunables"] = {**trial["tunables"], **cell.params[number]}
        trial["tuning"] = tuning
        return {"trial": trial, "tuning": tuning, "cell": cell.key}

    # -------------------------------------------------------------------- state and results

    @property
    def cell_keys(self) -> list[str]:
        return [cell.key for cell in self._cells]

    @property
    def tuned_cells(self) -> list[str]:
        return [cell.key for cell in self._cells if cell.tuned]

    def study(self, key: str):
        """The Optuna study of a tuned cell (None for an untuned one)."""
        for cell in self._cells:
            if cell.key == key:
                return cell.study
        raise KeyError(key)

    @property
    def remaining_trials(self) -> int:
        """Tune trials still to emit at most (queued + unspent budget x members), for progress."""
        total = 0
        for cell in self._cells:
            total += len(cell.queue)
            if cell.tuned and not cell.exhausted:
                total += max(0, self.budget - cell.emitted) * len(cell.members)
        return total

    def best(self) -> dict[str, dict]:
        """Per tuned cell with a complete tuning: the best one (``tuning``, ``params``, ``value``,
        ``complete``: how many tunings completed)."""
        from optuna.trial import TrialState

        out = {}
        for cell in self._cells:
            if not cell.tuned:
                continue
            complete = [t for t in cell.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
            if complete:
                top = max(complete, key=lambda t: (t.value, -t.number))
                out[cell.key] = {"tuning": top.number + cell.offset, "params": dict(top.params),
                                 "value": top.value, "complete": len(complete)}
        return out

    def get_state(self) -> dict:
        """What the storage does not hold: Tune trials in flight and untuned members finished in this
        session (JSON-able)."""
        return {"inflight": {tid: [self._cells[i].key, number, self._cells[i].member_ids[member]]
                             for tid, (i, number, member) in self._inflight.items()},
                "finished_untuned": sorted(list(pair) for pair in self._finished_untuned),
                "cursor": self._cursor}

    def set_state(self, state: dict) -> None:
        """Restore after ``get_state``: rebuild from the storage, then take the in-flight trials out of
        the queues (Tune restarts them under the same ids)."""
        self._finished_untuned = {tuple(pair) for pair in state.get("finished_untuned", [])}
        self._inflight = {}
        self._load()
        index_of = {cell.key: i for i, cell in enumerate(self._cells)}
        for tid, (key, number, member_id) in state.get("inflight", {}).items():
            if key not in index_of:
                continue
            cell = self._cells[index_of[key]]
            if member_id not in cell.member_ids:
                continue
            member = cell.member_ids.index(member_id)
            if (number, member) not in cell.queue:
                continue  # finished meanwhile (its outcome is in the storage or in ``done``)
            cell.queue.remove((number, member))
            self._inflight[tid] = (index_of[key], number, member)
            cell.inflight += 1
        self._cursor = int(state.get("cursor", 0)) % max(1, len(self._cells))

    def __getstate__(self):
        return {"args": self._args, "state": self.get_state(), "extra": self._extra_state()}

    def __setstate__(self, data):
        self._restore_extra_state(data.get("extra"))
        CellSearchCore.__init__(self, **data["args"])
        self.set_state(data["state"])

    def _extra_state(self):
        return None

    def _restore_extra_state(self, extra) -> None:
        pass


def _plain(value):
    """numpy scalars from a sampler -> Python numbers (JSON, TrialSpec)."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


class _StoredTrial:
    """A study trial a dead driver left RUNNING, continued under its own number.

    Its number is its tuning, so it is already in the finished members' trial ids, MLflow runs and
    records: failing it and asking its values again would give them a new number and orphan those.
    ``study.ask`` never returns a running trial, and ``optuna.trial.Trial`` is built by ``ask`` only
    (its constructor also re-runs the sampler's ``before_trial``), so the members' outcomes go through
    the storage's public trial interface, which is where a ``Trial`` writes them too; the study is
    told by number (``Study.tell`` takes one)."""

    def __init__(self, storage, study_name: str, number: int):
        self.storage = storage
        self.trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study_name), number)

    def set_user_attr(self, key: str, value: Any) -> None:
        self.storage.set_trial_user_attr(self.trial_id, key, value)

    def report(self, value: float, step: int) -> None:
        self.storage.set_trial_intermediate_value(self.trial_id, step, float(value))


def _repair_journal(path: Path) -> None:
    """Drop a torn last line (the driver killed mid-append): later appends would glue onto it and
    make the journal unreadable."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return
        handle.truncate(data.rfind(b"\n") + 1)


# ------------------------------------------------------------------------------------ ASHA

class CellRungs:
    """Asynchronous successive halving, one set of rungs per key (pure Python; ``CellASHA`` feeds it).

    Rungs sit at ``grace_period * reduction_factor**k`` (<= ``max_t``). When a trial reaches a rung it
    is stopped if its value is below the ``1 - 1/reduction_factor`` quantile of the values recorded
    there by *other trials of the same key* (as Ray's ASHA, which compares with every trial). The first
    trial of a key at a rung is never stopped, so a key with one trial (an untuned cell) never is.
    ``decisions`` logs every comparison: (key, trial id, rung, value, cutoff, stopped, peers)."""

    def __init__(self, grace_period: float = 1, max_t: float = 100, reduction_factor: float = 4,
                 mode: str = "max"):
        if grace_period <= 0 or max_t < grace_period or reduction_factor <= 1:
            raise ValueError("CellRungs: need 0 < grace_period <= max_t and reduction_factor > 1")
        if mode not in ("max", "min"):
            raise ValueError("CellRungs: mode must be 'max' or 'min'")
        self.milestones = []
        milestone = grace_period
        while milestone <= max_t:
            self.milestones.append(milestone)
            milestone *= reduction_factor
        self.rf, self.sign = reduction_factor, (1.0 if mode == "max" else -1.0)
        self.rungs: dict[Any, list[dict]] = {}
        self.decisions: list[tuple] = []

    def on_result(self, key, trial_id: str, t: float, value: float) -> bool:
        """True when the trial should stop."""
        value = _finite(value)
        if value is None or t is None:
            return False
        rungs = self.rungs.setdefault(key, [{} for _ in self.milestones])
        for index in reversed(range(len(self.milestones))):
            if t < self.milestones[index]:
                continue
            recorded = rungs[index]
            if trial_id in recorded:
                return False  # judged at this rung already
            peers = {tid: v for tid, v in recorded.items() if tid != trial_id}
            recorded[trial_id] = self.sign * value
            if not peers:
                self.decisions.append((key, trial_id, self.milestones[index], value, None, False, ()))
                return False
            cutoff = _quantile(sorted(peers.values()), 1 - 1 / self.rf)
            stop = self.sign * value < cutoff
            self.decisions.append((key, trial_id, self.milestones[index], value, self.sign * cutoff,
                                   stop, tuple(sorted(peers))))
            return stop
        return False


def _quantile(values: list, q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of sorted values."""
    position = (len(values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


# ------------------------------------------------------------------------------------ Ray classes

def _trial_key(config: Mapping) -> Optional[tuple]:
    trial = (config or {}).get("trial")
    return member_key(trial) if isinstance(trial, Mapping) else None


def _build_ray_classes() -> dict:
    import pickle

    from ray.tune.schedulers import FIFOScheduler, TrialScheduler
    from ray.tune.search import Searcher

    class CellSearcher(CellSearchCore, Searcher):
        """A Ray Tune ``Searcher`` running the grid of cells with Optuna inside the tuned ones (see
        ``CellSearchCore`` for the arguments). Use with ``TuneConfig(search_alg=searcher,
        num_samples=-1)``: the searcher says FINISHED when every cell is done. Each suggested config
        is ``{"trial": <TrialSpec dict>, "tuning": k, "cell": <cell key>}``."""

        def __init__(self, *args, **kwargs):
            Searcher.__init__(self, metric=None, mode=None)
            CellSearchCore.__init__(self, *args, **kwargs)

        def set_search_properties(self, metric, mode, config, **spec) -> bool:
            return True  # the metric is the declaration's; the configs are ours

        def add_evaluated_point(self, *args, **kwargs):
            raise NotImplementedError("CellSearcher resumes from its run directory, not from points")

        def save(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "w") as handle:
                json.dump(self.get_state(), handle)

        def restore(self, checkpoint_path: str) -> None:
            with open(checkpoint_path) as handle:
                self.set_state(json.load(handle))

        def _extra_state(self):
            return {"metric": self._metric, "mode": self._mode}

        def _restore_extra_state(self, extra) -> None:
            Searcher.__init__(self, metric=(extra or {}).get("metric"), mode=(extra or {}).get("mode"))

    class CellASHA(FIFOScheduler):
        """ASHA that compares a trial only with other tunings of its own (architecture, method, level,
        seed, fold) (``member_key`` of ``trial.config["trial"]``): never across sparsities, methods,
        seeds or folds. For within-cell tuning (``--trials-per-cell`` > 1); with one tuning per key it
        never stops anything.

        ``time_attr`` must grow monotonically within a trial (smctune reports ``global_step``);
        ``metric`` defaults to ``best``."""

        def __init__(self, metric: Optional[str] = "best", mode: str = "max",
                     time_attr: str = "global_step", grace_period: float = 1, max_t: float = 100,
                     reduction_factor: float = 4):
            super().__init__()
            self._metric, self._mode, self._time_attr = metric, mode, time_attr
            self.rungs = CellRungs(grace_period, max_t, reduction_factor, mode)
            self.stopped: list[str] = []

        def set_search_properties(self, metric, mode, **spec) -> bool:
            if self._metric and metric and metric != self._metric:
                return False
            self._metric = self._metric or metric
            if mode in ("max", "min"):
                self._mode, self.rungs.sign = mode, (1.0 if mode == "max" else -1.0)
            return True

        def _decide(self, trial, result) -> str:
            key = _trial_key(trial.config)
            if key is None or self._time_attr not in result or self._metric not in result:
                return TrialScheduler.CONTINUE
            stop = self.rungs.on_result(key, trial.trial_id, result[self._time_attr], result[self._metric])
            if stop:
                self.stopped.append(trial.trial_id)
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE

        def on_trial_result(self, tune_controller, trial, result):
            return self._decide(trial, result)

        def on_trial_complete(self, tune_controller, trial, result):
            if result:
                self._decide(trial, result)  # a finished trial's value still counts at its rung

        def debug_string(self) -> str:
            return f"CellASHA: {len(self.stopped)} stopped, {len(self.rungs.rungs)} keys"

        def save(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "wb") as handle:
                pickle.dump(self.__dict__, handle)

        def restore(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "rb") as handle:
                self.__dict__.update(pickle.load(handle))

    for cls in (CellSearcher, CellASHA):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__  # picklable as smctune.cells.X
    return {"CellSearcher": CellSearcher, "CellASHA": CellASHA}


def __getattr__(name: str):
    if name in ("CellSearcher", "CellASHA"):
        classes = _build_ray_classes()
        globals().update(classes)
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
