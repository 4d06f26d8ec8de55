"""Search within a cell: Optuna (TPE) over a method's declared tunables inside each (method, sparsity)
cell of the grid, with a whole stage in one Ray Tune ``Tuner``. This module is the searcher's logic
without Ray; ``tune_classes.CellSearcher`` mixes in Ray's ``Searcher``.

Cells, members and tunings are named in ``cell_keys``. Sparsity, seed and fold stay a grid; only the
declared tunables are searched. Tuning 0 is the configuration the sweep runs without a search (the
paper's defaults after the search space's and preset's ``methods:`` blocks): ``trials_per_cell: 1`` is
exactly the plain sweep, and raising the budget later reuses the finished default trials. When the
declared ranges do not contain that configuration (presets rescale step counts: smoke's GMP
``frequency`` is 4, not 500) the study cannot hold it: every tuning is then sampled and they are
numbered from 1 (``messages`` says so).

One Optuna study per tuned cell (``cell_study``), persisted in the run directory's journal
(``optuna_journal``): a new ``CellSearchCore`` on the same run directory continues every study:
finished study trials are not asked again, a study trial that was running gets only its missing
members re-emitted, and the budget counts what was already spent.
"""
from __future__ import annotations

import os
from collections import deque
from typing import Callable, Mapping, Optional, Sequence

from smctune.config.search_decl import SearchDecl, check_trials_per_cell
from smctune.errors import UserError
from smctune.rundir.layout import RunDir
from smctune.sweep.cell_keys import base_trial_id, cell_key
from smctune.sweep.cell_study import FAILED, OK, STOPPED, Cell, finite
from smctune.sweep.optuna_journal import open_journal
from smctune.sweep.trial_order import TrialLengths, planned_work

FINISHED = "FINISHED"         # == ray.tune.search.Searcher.FINISHED


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
        storage_dir: the run directory; the studies live in its ``RunDir.optuna_journal``.
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
        self.storage_path = RunDir(storage_dir).optuna_journal
        self.done = dict(done or {})
        self.validate = validate
        self.max_concurrent_per_cell = max_concurrent_per_cell
        self.messages: list[str] = []         # notes for the driver to print (e.g. an exhausted cell)
        self._inflight: dict[str, tuple] = {}  # Tune trial id -> (cell index, number, member index)
        self._finished_untuned: set = set()   # (cell key, member id) finished in this session
        self._lengths = TrialLengths()
        self._journal = None
        self._cells = self._group(self._args["trials"])
        self._load()

    # -------------------------------------------------------------------- construction

    def _group(self, trials) -> list[Cell]:
        cells: dict[str, Cell] = {}
        for trial in trials:
            key = cell_key(trial)
            cell = cells.setdefault(key, Cell(key, trial["method"]))
            member_id = base_trial_id(trial)
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
            cell.reset()
            if cell.tuned:
                if self._journal is None:
                    self._journal = open_journal(self.storage_path)
                cell.open_study(self._journal, self.storage_path, seed=self.seed, budget=self.budget,
                                metric=self.decl.metric, done=self.done, note=self._note)
            else:
                cell.params[0] = {}
                cell.queue.extend((0, i) for i, member_id in enumerate(cell.member_ids)
                                  if member_id not in self.done
                                  and (cell.key, member_id) not in self._finished_untuned)
        self._line_up()

    def _line_up(self) -> None:
        """Cells ready to give a trial, grouped by what orders them (``TrialLengths.priority`` depends
        on the method and the planned work only): ``suggest`` compares the few groups, not every
        cell, and a cell with nothing to give leaves its group until a trial of it completes (the
        only event that can give it more), so a stage of n cells costs O(n) cell visits, not O(n^2)."""
        self._ready: dict[tuple, deque] = {}     # (method, work) -> ready cell indices, next first
        for index, cell in enumerate(self._cells):
            self._ready.setdefault((cell.method, cell.work), deque()).append(index)
        self._first = {group: cells[0] for group, cells in self._ready.items()}
        self._served: dict[tuple, int] = {}      # group -> suggest count when it last gave a trial
        self._idle: set = set()                  # cells out of their group (nothing to give)
        self._suggested = 0

    def _note(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)

    # -------------------------------------------------------------------- Searcher protocol

    def suggest(self, trial_id: str):
        """The next Tune trial: the longest expected first (trial_order.py), taking turns between
        cells of equal length; None while waiting for results; FINISHED."""
        groups = sorted(self._ready, reverse=True, key=lambda group: (
            self._lengths.priority(*group), -self._served.get(group, -1), -self._first[group]))
        for group in groups:
            ready = self._ready[group]
            while ready:
                index = ready[0]
                cell = self._cells[index]
                item = self._take(cell)
                if item is None:
                    self._idle.add(ready.popleft())
                    continue
                ready.rotate(-1)
                self._served[group] = self._suggested
                self._suggested += 1
                number, member = item
                self._inflight[trial_id] = (index, number, member)
                cell.inflight += 1
                self._lengths.started(cell.method)
                return cell.config(number, member)
        if not self._inflight and all(cell.finished(self.budget) for cell in self._cells):
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
        if cell.tuned and index in self._idle:   # it may ask its study again (an untuned one never refills)
            self._idle.discard(index)
            self._ready[(cell.method, cell.work)].append(index)
        if result and not error and result.get("level_done", True):
            self._lengths.observe(cell.method, cell.work, finite(result.get("time_total_s")))
        if not cell.tuned:
            self._finished_untuned.add((cell.key, cell.member_ids[member]))
            return
        cell.record(number, member, self._outcome(result, error))

    def _take(self, cell: Cell):
        while True:
            if cell.queue:
                return cell.queue.popleft()
            if (not cell.tuned or cell.exhausted or cell.emitted >= self.budget
                    or len(cell.open) >= self.max_concurrent_per_cell):
                return None
            cell.ask(self.seed, self.validate, self.done, self._note)  # queues the new tuning's members

    def _outcome(self, result: Optional[dict], error: bool) -> tuple:
        if error or not result:
            return (FAILED, None)
        key = "best" if self.decl.metric == "best" else result.get("metric_name")
        value = finite(result.get(key)) if key else None
        if value is None:
            return (FAILED, None)
        # Tune marks every last result ``done``, early-stopped or not; smctune's trainable says
        # ``level_done`` on the evaluation that ends the trial, so a last result without it was cut
        # short by the scheduler. (A trainable that never reports ``level_done`` is taken as finished.)
        ran_out = bool(result.get("level_done", True))
        return (OK if ran_out else STOPPED, value)

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
                "finished_untuned": sorted(list(pair) for pair in self._finished_untuned)}

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
