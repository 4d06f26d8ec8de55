"""What the report says beside the failing sparsities: per architecture, the layer and mask analysis
and the paper's values; per run, what ran where, at what cost, and what is still missing.

Kept apart from ``analysis`` because these facts read more than the records (mask files, ``plan.json``,
``environment.json``, the search space) and a report must still come out when any of them is absent.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from smctune.config.search_space import sweep_search_space, trial_resources
from smctune.report.analysis import Summary
from smctune.report.load import RunResults
from smctune.report.paper_reference import paper_reference
from smctune.report.similarity import embedding_flags, pair_similarities
from smctune.rundir.records import FINISHED_STATUSES


@dataclass(frozen=True)
class ArchitectureFacts:
    """What the report adds to one architecture's ``Summary``: layer and mask analysis, the paper."""

    similarities: tuple = ()     # similarity.PairSimilarity
    embedding: dict = field(default_factory=dict)   # (method, level) -> reason
    paper: object = None         # paper_reference.PaperReference or None


@dataclass(frozen=True)
class RunFacts:
    """Run-level facts for results.json: what ran where, at what cost, and what is missing."""

    environment: Optional[dict] = None
    sweep: Optional[dict] = None
    compute: dict = field(default_factory=dict)
    completeness: dict = field(default_factory=dict)


def architecture_facts(run: RunResults, summary: Summary, compare_paper: bool) -> ArchitectureFacts:
    """Layer and mask analysis of one architecture (every saved mask of it is read), and with
    ``compare_paper`` the paper's values for its task."""
    paper = paper_reference(summary.task, summary.model) if compare_paper else None
    return ArchitectureFacts(similarities=tuple(pair_similarities(run, summary.model)),
                             embedding=embedding_flags(run, summary.model), paper=paper)


def run_facts(run: RunResults) -> RunFacts:
    files = run.files
    return RunFacts(environment=_read_json(files.environment_file), sweep=_read_json(files.sweep_file),
                    compute=_compute(run), completeness=_completeness(run, _read_json(files.plan_file)))


def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _gpus_per_trial(run: RunResults) -> Optional[float]:
    try:
        return float(trial_resources(run.spec, sweep_search_space(run.spec)).gpu)
    except Exception:  # noqa: BLE001 - a search space gone or changed only costs the GPU-seconds figure
        return None


def _compute(run: RunResults) -> dict:
    walls = [t.wall_s for t in run.trials if isinstance(t.wall_s, (int, float)) and math.isfinite(t.wall_s)]
    trial_seconds = math.fsum(walls)
    gpus = _gpus_per_trial(run)
    starts = [t.started_at for t in run.trials if t.started_at is not None]
    ends = [t.ended_at for t in run.trials if t.ended_at is not None]
    return {"trial_seconds": round(trial_seconds, 3), "trials_timed": len(walls), "gpus_per_trial": gpus,
            "gpu_seconds": None if gpus is None else round(trial_seconds * gpus, 3),
            "wall_seconds": round(max(ends) - min(starts), 3) if starts and ends else None,
            "wall_seconds_note": "first trial start to last trial end, as the driver saw them"}


def _completeness(run: RunResults, plan: Optional[dict]) -> dict:
    files = run.files
    recorded = {t.trial_id for t in run.trials}
    finished = {t.trial_id for t in run.trials if t.status in FINISHED_STATUSES}
    if plan is None or not isinstance(plan.get("trials"), list):
        return {"planned": None, "finished": len(finished), "missing": [], "complete": None,
                "note": f"no {files.plan_file.name} (a run from an older smctune, or rebuilt without it)"}
    planned = [str(t) for t in plan["trials"]]
    missing = [t for t in planned if t not in recorded]
    unfinished = sorted(t for t in recorded - finished if t in planned)
    facts = {"planned": len(planned), "finished": len(finished & set(planned)), "missing": missing,
             "unfinished": unfinished, "search": plan.get("search"), "note": None,
             "complete": not missing and not unfinished}
    if plan.get("search") == "threshold":
        # the grid is the plan, but a threshold search runs only the levels its bisection needs:
        # it is complete once it has written its answers, whatever the grid still lacks
        facts["complete"] = files.threshold_file.is_file() and not unfinished
        facts["note"] = (f"threshold search: the grid trials it did not need are listed as missing and "
                         f"were not run, by design; {files.threshold_file.name} holds each curve's answer")
    return facts
