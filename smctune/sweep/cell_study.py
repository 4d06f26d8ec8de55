"""One cell of the cell searcher and its Optuna study: open or continue it, ask for a feasible
tuning, and tell it the mean over the cell's members.

A study trial is one tuning evaluated on *every* member of the cell (each seed and fold): the study
is told the mean over them once all have ended, the value the report computes for a cell. Tuning on
one seed and reporting the seed mean would select on noise of that seed only.

Every member's outcome is written to its study trial (a user attribute ``m:<member id>``) the moment
Tune reports it, so a driver that dies loses nothing: the next one finds the study trial RUNNING
with the outcomes so far and re-emits only the missing members (``open_study``).
"""
from __future__ import annotations

import json
import math
import zlib
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from smctune.config.search_decl import ParamDecl
from smctune.errors import UserError
from smctune.sweep.optuna_journal import StoredTrial

MAX_INFEASIBLE = 100          # suggestions in a row rejected by ``validate`` before a cell gives up

# member outcomes
OK, STOPPED, FAILED = "ok", "stopped", "failed"


def finite(value) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def stable_int(*parts) -> int:
    return zlib.crc32(json.dumps(parts, sort_keys=True, default=str).encode()) & 0x7FFFFFFF


def _plain(value):
    """numpy scalars from a sampler -> Python numbers (JSON, TrialSpec)."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


class Cell:
    """One cell's bookkeeping (derivable from the storage plus the searcher's in-flight map).

    Study trials are keyed by their number (0 for an untuned cell); tuning = number + ``offset``."""

    def __init__(self, key: str, method: str):
        self.key, self.method = key, method
        self.members: list[dict] = []         # planned TrialSpec dicts, in plan order
        self.member_ids: list[str] = []       # their (tuning-0) trial ids
        self.space: dict[str, ParamDecl] = {}
        self.tuned = False
        self.study = None
        self.offset = 0                       # 1 when the planned configuration is outside the space
        self.work = 1.0                       # trial_order.planned_work of its members
        self.reset()

    def reset(self) -> None:
        self.queue: deque = deque()           # (number, member index) still to emit
        self.params: dict[int, dict] = {}     # number -> searched values ({} = planned tunables)
        self.results: dict[int, dict] = {}    # number -> member index -> (outcome, value)
        self.trials: dict[int, Any] = {}      # number -> optuna Trial or StoredTrial (open study trials)
        self.open: set[int] = set()           # study trials asked and not told yet
        self.emitted = 0                      # study trials spent from the budget
        self.inflight = 0                     # Tune trials running now
        self.exhausted = False                # validate() rejected MAX_INFEASIBLE suggestions

    def finished(self, budget: int) -> bool:
        if self.queue or self.inflight or self.open:
            return False
        return not self.tuned or self.exhausted or self.emitted >= budget

    def defaults(self) -> dict:
        """The planned values of the searched tunables: tuning 0 when the space contains them."""
        return {name: self.members[0]["tunables"][name] for name in self.space}

    def identity(self, metric: str) -> dict:
        """What a study may only be continued with (JSON-able): a changed search is a new study."""
        return {"space": {name: p.to_dict() for name, p in sorted(self.space.items())},
                "members": list(self.member_ids), "metric": metric,
                "planned": {name: self.members[0]["tunables"].get(name) for name in sorted(self.space)}}

    def sampler(self, seed: int, budget: int, history: int):
        import optuna

        startup = max(1, min(10, budget // 3))
        return optuna.samplers.TPESampler(seed=stable_int(seed, self.key, history),
                                          n_startup_trials=startup, constant_liar=True)

    # ------------------------------------------------------------------------------ the study

    def open_study(self, storage, journal: Path, *, seed: int, budget: int, metric: str,
                   done: Mapping, note: Callable[[str], None]) -> None:
        """Create or continue the cell's study and take up the study trials a dead driver left
        running (their missing members are queued again)."""
        import optuna
        from optuna.trial import TrialState

        outside = {name: self.members[0]["tunables"].get(name) for name, param in self.space.items()
                   if not all(param.contains(m["tunables"].get(name)) for m in self.members)}
        # Tuning 0 is the planned configuration when the declared space contains it (the anchor of
        # the study, reusable from a run without search); else every tuning is sampled and they are
        # numbered from 1, so no tuned trial ever takes a planned trial's id.
        self.offset = 1 if outside else 0
        if outside:
            note(f"cell {self.key}: the planned {self.method} "
                 f"{', '.join(f'{k} {v!r}' for k, v in outside.items())} lies outside "
                 f"search.methods.{self.method}; its study does not include the defaults "
                 f"(tunings are numbered from t1)")
        study = optuna.create_study(storage=storage, study_name=self.key, direction="maximize",
                                    load_if_exists=True, sampler=self.sampler(seed, budget, 0))
        identity = json.loads(json.dumps(self.identity(metric), default=str))
        recorded = study.user_attrs.get("smctune")
        if recorded is None:
            study.set_user_attr("smctune", identity)
        elif recorded != identity:
            changed = [key for key in identity if recorded.get(key) != identity[key]]
            raise UserError(
                f"{journal}: the study of cell {self.key} was started with a different "
                f"{', '.join(changed)} (recorded {json.dumps({k: recorded.get(k) for k in changed})}); "
                f"a study only continues with the same search, seeds and folds: use a new --name")
        trials = study.get_trials(deepcopy=False)
        study.sampler = self.sampler(seed, budget, len(trials))
        self.study = study
        if not trials and not self.offset:  # the configuration the sweep runs without a search
            study.enqueue_trial(self.defaults(), user_attrs={"defaults": True})
        for frozen in trials:
            if frozen.state == TrialState.RUNNING and set(self.space) - set(frozen.params):
                # the driver died inside ask(), before every value was drawn: nothing ran with it
                StoredTrial(storage, self.key, frozen.number).set_user_attr("infeasible", "interrupted ask")
                study.tell(frozen.number, state=TrialState.FAIL)
                continue
            if frozen.state == TrialState.WAITING:
                continue
            if frozen.state == TrialState.FAIL and frozen.user_attrs.get("infeasible"):
                continue
            self.emitted += 1
            if frozen.state != TrialState.RUNNING:
                continue
            number = frozen.number
            self.params[number] = {name: frozen.params[name] for name in self.space}
            self.trials[number] = StoredTrial(storage, self.key, number)
            self.open.add(number)
            self.results[number] = {}
            for index, member_id in enumerate(self.member_ids):
                outcome = frozen.user_attrs.get(f"m:{member_id}")
                if outcome is not None:
                    self.results[number][index] = tuple(outcome)
            self.queue_members(number, done)

    def ask(self, seed: int, validate: Optional[Callable[[str, dict], None]], done: Mapping,
            note: Callable[[str], None]) -> None:
        """Ask the study for its next tuning and queue its members. A suggestion ``validate``
        rejects is told as failed (TPE ignores failed trials, so it learns nothing from it and tends to
        propose the same region again); the retries draw at random from the declared space until one
        is feasible (rejection sampling), then TPE takes over again for the next tuning."""
        import optuna
        from optuna.trial import TrialState

        distributions = {name: param.distribution() for name, param in self.space.items()}
        tpe = self.study.sampler
        try:
            for attempt in range(MAX_INFEASIBLE):
                if attempt == 1:
                    self.study.sampler = optuna.samplers.RandomSampler(
                        seed=stable_int(seed, self.key, len(self.study.trials), "random"))
                trial = self.study.ask(distributions)
                params = {name: _plain(trial.params[name]) for name in self.space}
                if validate is not None:
                    try:
                        for member in self.members:
                            validate(self.method, {**member["tunables"], **params})
                    except UserError as err:
                        trial.set_user_attr("infeasible", str(err))
                        self.study.tell(trial, state=TrialState.FAIL)
                        continue
                number = trial.number
                self.emitted += 1
                self.params[number] = params
                self.trials[number] = trial
                self.open.add(number)
                self.results[number] = {}
                self.queue_members(number, done)
                return
        finally:
            self.study.sampler = tpe
        self.exhausted = True
        note(f"cell {self.key}: {MAX_INFEASIBLE} suggestions in a row were rejected by "
             f"validation; its search stops after {self.emitted} tunings")

    def queue_members(self, number: int, done: Mapping) -> None:
        """Queue the members of an open tuning that have no outcome yet; tuning 0 takes finished
        planned trials from ``done``."""
        results = self.results[number]
        credit = number == 0 and not self.offset and self.params[number] == self.defaults()
        for index, member_id in enumerate(self.member_ids):
            if index in results:
                continue
            if credit and finite(done.get(member_id)) is not None:
                results[index] = (OK, finite(done[member_id]))
                self.trials[number].set_user_attr(f"m:{member_id}", list(results[index]))
                continue
            self.queue.append((number, index))
        self.maybe_tell(number)

    def record(self, number: int, member: int, outcome: tuple) -> None:
        """A member of a tuning ended: keep its outcome in the study, tell the study when complete."""
        self.results.setdefault(number, {})[member] = outcome
        trial = self.trials.get(number)
        if trial is not None:
            trial.set_user_attr(f"m:{self.member_ids[member]}", list(outcome))
        self.maybe_tell(number)

    def maybe_tell(self, number: int) -> None:
        """Tell the study once every member of the tuning has an outcome: the mean when all ran to
        the end; pruned (the mean as its last intermediate value) when early stopping ended one;
        failed when one failed or has no value."""
        from optuna.trial import TrialState

        results = self.results.get(number, {})
        if number not in self.open or len(results) < len(self.members):
            return
        outcomes = [results[i] for i in range(len(self.members))]
        trial = self.trials.pop(number)
        self.open.discard(number)
        if any(status == FAILED for status, _ in outcomes):
            self.study.tell(number, state=TrialState.FAIL)
            return
        mean = sum(value for _, value in outcomes) / len(outcomes)
        if any(status == STOPPED for status, _ in outcomes):
            trial.report(mean, 0)
            self.study.tell(number, state=TrialState.PRUNED)
        else:
            self.study.tell(number, mean)

    def config(self, number: int, member: int) -> dict:
        """The Tune config of a member at a tuning: ``{"trial": <TrialSpec dict>, "tuning", "cell"}``."""
        tuning = number + self.offset
        trial = dict(self.members[member])
        trial["tunables"] = {**trial["tunables"], **self.params[number]}
        trial["tuning"] = tuning
        return {"trial": trial, "tuning": tuning, "cell": self.key}
