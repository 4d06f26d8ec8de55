"""``results.json``: the machine-readable report, the file other tools and later smctune versions read.

Its layout is a schema (``SCHEMA_VERSION``, documented in the README): a field changes meaning only
with a new version, so a notebook written against one run keeps working on the next. Everything in
it comes from a ``Summary`` and the facts beside it; nothing is recomputed here.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Union

from smctune.report.analysis import Summary
from smctune.report.cell_stats import CellStat
from smctune.report.facts import ArchitectureFacts, RunFacts
from smctune.report.tables import format_fail
from smctune.rundir.layout import write_atomic

SCHEMA_VERSION = 2


def _key(sparsity: float) -> str:
    return repr(round(float(sparsity), 6))


def _stat_json(stat: Optional[CellStat]) -> Optional[dict]:
    if stat is None:
        return None
    data = {"mean": stat.mean, "std": stat.std, "n": stat.n, "values": list(stat.values),
            "status_counts": dict(stat.status_counts)}
    if stat.by_fold:
        data["folds"] = {str(fold): value for fold, value in stat.by_fold.items()}
    if stat.tunings > 1:
        data["tuning"], data["tunings"] = stat.tuning, stat.tunings
    return data


def results_dict(summary: Summary, facts: ArchitectureFacts = ArchitectureFacts()) -> dict:
    """One architecture's results (schema ``SCHEMA_VERSION``, documented in the README)."""
    methods = {}
    for method in summary.methods:
        fail = method.fail
        per_level = {}
        for s in summary.grid:
            stat = method.cells.get(s)
            entry = _stat_json(stat) or {"mean": None, "std": None, "n": 0, "values": [], "status_counts": {}}
            per_level[_key(s)] = {
                "sparsity": s, **entry,
                "achieved_sparsity": stat.achieved if stat is not None else None,
                "tunables": stat.tunables if stat is not None else {},
                "p_value": fail.p_values.get(s),
                "mark": fail.verdict(s, stat),
                "collapsed_layers": summary.collapsed.get((method.name, s), []),
                "embedding_collapse": facts.embedding.get((method.name, s)),
            }
        methods[method.name] = {
            "levels": per_level,
            "failing_sparsity": fail.fails_at,
            "outcome": fail.outcome,
            "fails_at_first_level": fail.fails_at_first_level,
            "non_monotone": fail.non_monotone,
            "missing_levels": list(fail.missing),
            "missing_below": fail.missing_below,
            "threshold": fail.threshold,
            "not_significant": list(fail.not_significant),
            "untestable": list(fail.untestable),
            "fails_at_text": format_fail(fail),
        }
    paper = facts.paper
    return {
        "schema_version": SCHEMA_VERSION,
        "task": summary.task,
        "preset": summary.preset,
        "name": summary.name,
        "metric": summary.metric,
        "metric_name": summary.metric_name,
        "criterion": summary.criterion.as_dict(),
        "grid": list(summary.grid),
        "seeds": list(summary.seeds),
        "model": summary.model,
        "folds": list(summary.folds),
        "dense": _stat_json(summary.dense),
        "chance": summary.chance,
        "methods": methods,
        "method_order": [m.name for m in summary.methods],
        "trials": {"ok": summary.trials_ok, "collapsed": summary.trials_collapsed,
                   "failed": summary.trials_failed,
                   "killed": summary.trials_killed,
                   "failures": [{"trial_id": t, "status": s, "error": e} for t, s, e in summary.failures]},
        "similarity": [dataclasses.asdict(p) for p in facts.similarities],
        "paper": None if paper is None else {"dense": paper.dense, "curves": {
            m: {_key(k): v for k, v in pts.items()} for m, pts in paper.curves.items()},
            "citation": paper.citation},
    }


def results_document(summaries, arch_facts=None, run_facts: RunFacts = RunFacts()) -> dict:
    """results.json: one architecture's results at the top level, or (a sweep over several) the
    common fields once and one results object per architecture under ``by_model``; then the
    run-level facts (environment, resolved sweep settings, compute, completeness)."""
    summaries = [summaries] if isinstance(summaries, Summary) else list(summaries)
    arch_facts = list(arch_facts or [ArchitectureFacts()] * len(summaries))
    if len(summaries) == 1:
        data = results_dict(summaries[0], arch_facts[0])
    else:
        first = summaries[0]
        data = {"schema_version": SCHEMA_VERSION, "task": first.task, "preset": first.preset,
                "name": first.name, "models": [s.model for s in summaries],
                "by_model": {s.model: results_dict(s, f) for s, f in zip(summaries, arch_facts)}}
    data.update(environment=run_facts.environment, sweep=run_facts.sweep, compute=run_facts.compute,
                completeness=run_facts.completeness)
    return data


def write_results_json(summaries, path: Union[str, Path], arch_facts=None,
                       run_facts: RunFacts = RunFacts()) -> Path:
    """Write ``results_document`` as JSON; NaN is refused (``allow_nan=False``) because it is not JSON
    and would break strict readers: every missing value is ``null``."""
    text = json.dumps(results_document(summaries, arch_facts, run_facts), indent=2, ensure_ascii=False,
                      allow_nan=False) + "\n"
    return write_atomic(path, text)
