"""Assembles the report of one run: per-architecture analysis beyond the summary, the figures, the
run-level facts and the document's blocks. ``report.write_report`` calls this; the pieces it uses
compute (``analysis``, ``similarity``), draw (``figures``, ``report.plot_curves``) or render
(``report_doc``) and know nothing of each other.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import report_doc as doc
from . import units
from .analysis import FAILS_AT, NEVER, RESULT_STATUSES, RunResults, Summary


@dataclass(frozen=True)
class DrawnFigures:
    curves: Path
    heatmap: Optional[Path]
    layerwise: tuple          # (level, path)
    similarity: tuple         # (level, kind, path); kind "jaccard" | "layers"

    @property
    def paths(self) -> tuple:
        return tuple(p for p in (self.curves, self.heatmap) if p) + tuple(p for _, p in self.layerwise) \
            + tuple(p for _, _, p in self.similarity)


def architecture_facts(run: RunResults, summary: Summary, paper):
    """Layer and mask analysis of one architecture (the report's slowest computing: every saved mask
    is read), next to its ``paper`` reference (``paper_for``)."""
    from .report import ArchitectureFacts
    from .similarity import embedding_flags, pair_similarities

    return ArchitectureFacts(similarities=tuple(pair_similarities(run, summary.model)),
                             embedding=embedding_flags(run, summary.model), paper=paper)


def paper_for(summary: Summary, compare_paper: bool):
    from .paper_reference import paper_reference

    return paper_reference(summary.task, summary.model) if compare_paper else None


def layer_levels(profiles: dict, wanted: Optional[tuple]) -> tuple:
    """The grid levels nearest each wanted sparsity (the paper's 0.36/0.672/0.832 by default) that
    have per-layer data."""
    from .report import PAPER_LAYER_LEVELS

    present = sorted({level for _, level in profiles})
    if not present:
        return ()
    return tuple(dict.fromkeys(min(present, key=lambda g: abs(g - target))
                               for target in wanted or PAPER_LAYER_LEVELS))


def draw_summary(summary: Summary, paper, out: Path, suffix: str) -> tuple:
    """Draw an architecture's curves and heatmap, which need the summary only. Returns their paths
    (the heatmap's None without methods)."""
    from . import figures
    from .report import PLOT_FILE, cell_mark, plot_curves, MARK_FAIL

    curves_path = out / (f"curves{suffix}.png" if suffix else PLOT_FILE)
    curves = plot_curves(summary, curves_path, paper=paper)
    names = [m.name for m in summary.methods]
    heatmap = None
    if names:
        values = {(m.name, s): (m.cells[s].mean if m.cells.get(s) is not None else None)
                  for m in summary.methods for s in summary.grid}
        failing = {(m.name, s): cell_mark(s, m.cells.get(s), m.fail) == MARK_FAIL
                   for m in summary.methods for s in summary.grid}
        path = out / f"heatmap{suffix}.png"
        heatmap = figures.plot_heatmap(
            names, summary.grid, values, failing, path,
            f"{summary.task}{_model(summary)}: {summary.metric_name} by method and sparsity",
            units.label(summary.metric_name))
    return curves, heatmap


def draw_layers(run: RunResults, summary: Summary, facts, head: tuple, out: Path, suffix: str,
                wanted_levels) -> DrawnFigures:
    """Draw the layerwise and similarity figures; ``head`` is ``draw_summary``'s result."""
    from . import figures
    from .similarity import layer_profiles

    profiles = layer_profiles(run, summary.model)
    layerwise, similarity = [], []
    for level in layer_levels(profiles, wanted_levels):
        at_level = {method: layers for (method, lv), layers in profiles.items() if lv == level}
        path = out / f"layerwise{suffix}-s{level:.3f}.png"
        layerwise.append((level, figures.plot_layerwise(
            at_level, level, path, f"{summary.task}{_model(summary)}: layerwise sparsity at {level:.3f}")))
        pairs = [p for p in facts.similarities if p.sparsity == level]
        for kind, attr, label in (("jaccard", "jaccard", "mask Jaccard (kept weights)"),
                                  ("layers", "layer_correlation", "layerwise sparsity correlation (r)")):
            values = {(p.method_a, p.method_b): getattr(p, attr) for p in pairs}
            if any(v is not None for v in values.values()):
                methods = list(dict.fromkeys([p.method_a for p in pairs] + [p.method_b for p in pairs]))
                path = out / f"similarity-{kind}{suffix}-s{level:.3f}.png"
                similarity.append((level, kind, figures.plot_similarity(
                    methods, values, path, f"{summary.task}{_model(summary)}: {label} at {level:.3f}", label)))
    return DrawnFigures(*head, tuple(layerwise), tuple(similarity))


def _model(summary: Summary) -> str:
    return f" · {summary.model}" if summary.model else ""


# ------------------------------------------------------------------------------------------ run facts

def run_facts(run: RunResults):
    from . import environment
    from .report import PLAN_FILE, RunFacts

    return RunFacts(environment=_read_json(run.run_dir / environment.ENVIRONMENT_FILE),
                    sweep=_read_json(run.run_dir / "sweep.json"), compute=_compute(run),
                    completeness=_completeness(run, _read_json(run.run_dir / PLAN_FILE)))


def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _gpus_per_trial(run: RunResults) -> Optional[float]:
    from .config import sweep_search_space
    from .sweep import trial_resources

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
    recorded = {t.trial_id for t in run.trials}
    finished = {t.trial_id for t in run.trials if t.status in RESULT_STATUSES}
    if plan is None or not isinstance(plan.get("trials"), list):
        return {"planned": None, "finished": len(finished), "missing": [], "complete": None,
                "note": "no plan.json (a run from an older smctune, or rebuilt without it)"}
    planned = [str(t) for t in plan["trials"]]
    missing = [t for t in planned if t not in recorded]
    unfinished = sorted(t for t in recorded - finished if t in planned)
    facts = {"planned": len(planned), "finished": len(finished & set(planned)), "missing": missing,
             "unfinished": unfinished, "search": plan.get("search"), "note": None,
             "complete": not missing and not unfinished}
    if plan.get("search") == "threshold":
        # the grid is the plan, but a threshold search runs only the levels its bisection needs:
        # it is complete once it has written its answers, whatever the grid still lacks
        facts["complete"] = (run.run_dir / "threshold.json").is_file() and not unfinished
        facts["note"] = ("threshold search: the grid trials it did not need are listed as missing and "
                         "were not run, by design; threshold.json holds each curve's answer")
    return facts


# ------------------------------------------------------------------------------------------ document

def blocks(summaries, facts_list, drawn_list, facts_run, table: str, criterion) -> list:
    from .report import format_fail

    out: list = []
    completeness = facts_run.completeness
    if completeness.get("search") == "threshold" and completeness.get("complete"):
        out += [doc.Heading("Status"), doc.Paragraph(
            f"Threshold search: {completeness['finished']} of the grid's {completeness['planned']} trials "
            "were run; the levels it skipped show —. threshold.json holds each curve's answer.")]
    elif completeness.get("complete") is False:
        missing = completeness.get("missing") or []
        unfinished = completeness.get("unfinished") or []
        shown = ", ".join(missing[:12]) + (f", … (+{len(missing) - 12})" if len(missing) > 12 else "")
        text = (f"Partial sweep: {completeness['finished']} of {completeness['planned']} planned trials "
                f"finished; {len(missing)} have no result yet" + (f" ({shown})" if missing else "")
                + (f"; {len(unfinished)} failed or were killed" if unfinished else "")
                + ". Cells without a value show —; continue with `smctune resume`.")
        if completeness.get("note"):
            text += f" Note: {completeness['note']}."
        out += [doc.Heading("Status"), doc.Paragraph(text)]
    out.append(doc.Heading("Answer: where each method stops matching dense"))
    out.append(doc.Paragraph(f"Criterion: {criterion.label}. {CRITERION_TEXT}"))
    for summary, facts, drawn in zip(summaries, facts_list, drawn_list):
        model = f" ({summary.model})" if summary.model else ""
        rows = [(m.name, format_fail(m.fail), _outcome_note(m.fail)) for m in summary.methods]
        if rows:
            out.append(doc.Table(("method" + model, "fails at", "notes"), tuple(rows)))
        out.append(doc.Figure(drawn.curves, f"{summary.task}{model}: {summary.metric_name} vs sparsity, every "
                              "method, dense (solid) and chance (dotted)"
                              + (f"; paper values: {facts.paper.citation}" if facts.paper else "")))
        if drawn.heatmap:
            out.append(doc.Figure(drawn.heatmap, f"{summary.task}{model}: method × sparsity (hatched ✗: fails)"))
    out += [doc.Heading("Method × sparsity table"), doc.Preformatted(table)]
    out.append(doc.Heading("Layerwise sparsity and masks"))
    out.append(doc.Paragraph(
        "Per-layer sparsity of each method's masks (layers from input to output), the correlation of "
        "those per-layer profiles between methods, and the Jaccard overlap of the kept weights of "
        "their masks at the same sparsity (mean over the seeds both have). Magnitude methods that "
        "converge to the same masks (the paper's lazy-regime observation) show Jaccard near 1."))
    for summary, facts, drawn in zip(summaries, facts_list, drawn_list):
        flags = _collapse_flags(summary, facts)
        out.append(doc.Bullets(tuple(flags)) if flags else doc.Paragraph("No layer or embedding collapse found."))
        pairs = [p for p in facts.similarities if p.jaccard is not None or p.layer_correlation is not None]
        if pairs:
            out.append(doc.Table(("sparsity", "method A", "method B", "mask Jaccard", "layer-profile r", "seeds"),
                                 tuple((f"{p.sparsity:.3f}", p.method_a, p.method_b, _num(p.jaccard),
                                        _num(p.layer_correlation), str(max(p.n_jaccard, p.n_correlation)))
                                       for p in pairs)))
        if pairs and all(p.jaccard is None for p in pairs):
            out.append(doc.Paragraph("Mask Jaccard is not available: it needs the mask files in the run "
                                     "directory's masks/ (a report rebuilt from MLflow has only the "
                                     "per-layer profiles)."))
        for level, path in drawn.layerwise:
            out.append(doc.Figure(path, f"{summary.task}: layerwise sparsity at {level:.3f} (dashed: target)"))
        for level, kind, path in drawn.similarity:
            what = "mask Jaccard" if kind == "jaccard" else "layerwise-sparsity correlation"
            out.append(doc.Figure(path, f"{summary.task}: {what} between methods at {level:.3f}"))
    papers = [(s, f) for s, f in zip(summaries, facts_list) if f.paper is not None]
    if papers:
        out.append(doc.Heading("Compared with the paper (approximate)"))
        for summary, facts in papers:
            ours = summary.dense.mean if summary.dense is not None and summary.dense.mean is not None else None
            out.append(doc.Paragraph(
                f"{summary.task}{_model(summary)}: dense here {_pct(ours)} vs paper ≈{_pct(facts.paper.dense)} "
                f"({facts.paper.citation}). The paper fine-tunes the full models of its Table 3; a "
                f"'{summary.preset}' preset is not expected to match."))
    out += [doc.Heading("Environment and compute"), doc.Preformatted(json.dumps(
        {"environment": facts_run.environment, "compute": facts_run.compute}, indent=1))]
    return out


CRITERION_TEXT = ("A level fails when its mean (over seeds, each seed averaged over folds) is below the "
                  "threshold; the failing sparsity is the first grid level that fails. 'non-monotone' means "
                  "a higher level passes again.")


def _outcome_note(fail) -> str:
    notes = []
    if fail.outcome == FAILS_AT and fail.fails_at_first_level:
        notes.append("fails at the first level")
    if fail.outcome == NEVER:
        notes.append("never fails within the grid")
    if fail.non_monotone:
        notes.append("recovers after failing (non-monotone)")
    if fail.not_significant:
        notes.append("below threshold but not significant at " + ", ".join(f"{s:.3f}" for s in fail.not_significant))
    if fail.untestable:
        notes.append("untestable (< 2 seeds) at " + ", ".join(f"{s:.3f}" for s in fail.untestable))
    return "; ".join(notes)


def _collapse_flags(summary: Summary, facts) -> list:
    flags = [f"layer collapse: {method} at {level:.3f} leaves {len(names)} layer(s) 100 % pruned "
             f"({', '.join(names[:3])}{', …' if len(names) > 3 else ''})"
             for (method, level), names in sorted(summary.collapsed.items())]
    flags += [f"embedding collapse: {method} at {level:.3f}: {reason}"
              for (method, level), reason in sorted(facts.embedding.items())]
    return flags


def _num(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"
