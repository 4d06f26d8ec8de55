"""The cell searcher and the per-cell ASHA as Ray Tune classes: thin adapters of ``CellSearchCore``
and ``CellRungs`` to Tune's ``Searcher`` and ``TrialScheduler`` protocols.

Importing this module imports Ray; the modules that plan, search and report never do, so ``status``,
``plan`` and ``report`` run without it.
"""
from __future__ import annotations

import json
from typing import Optional

from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from smctune.rundir.layout import write_atomic
from smctune.sweep.cell_asha import CellRungs, trial_key
from smctune.sweep.cell_search import CellSearchCore


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
        write_atomic(checkpoint_path, json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as handle:
            self.set_state(json.load(handle))

    def _extra_state(self):
        return {"metric": self.metric, "mode": self.mode}

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
        self.metric_name, self.mode_name, self.time_attr = metric, mode, time_attr
        self.rungs = CellRungs(grace_period, max_t, reduction_factor, mode)
        self.stopped: list[str] = []

    @property
    def metric(self) -> Optional[str]:
        """What Tune checks every result for (``TrialScheduler.metric``)."""
        return self.metric_name

    def set_search_properties(self, metric, mode, **spec) -> bool:
        if self.metric_name and metric and metric != self.metric_name:
            return False
        self.metric_name = self.metric_name or metric
        if mode in ("max", "min"):
            self.mode_name, self.rungs.sign = mode, (1.0 if mode == "max" else -1.0)
        return True

    def _decide(self, trial, result) -> str:
        key = trial_key(trial.config)
        if key is None or self.time_attr not in result or self.metric_name not in result:
            return TrialScheduler.CONTINUE
        stop = self.rungs.on_result(key, trial.trial_id, result[self.time_attr], result[self.metric_name])
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
        state = {"metric": self.metric_name, "mode": self.mode_name, "time_attr": self.time_attr,
                 "stopped": self.stopped, "rungs": self.rungs.to_json()}
        write_atomic(checkpoint_path, json.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as handle:
            state = json.load(handle)
        self.metric_name, self.mode_name = state["metric"], state["mode"]
        self.time_attr, self.stopped = state["time_attr"], list(state["stopped"])
        self.rungs.sign = 1.0 if self.mode_name == "max" else -1.0
        self.rungs.restore_json(state["rungs"])
