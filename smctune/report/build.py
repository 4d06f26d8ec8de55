"""The report document as blocks (``smctune.report.document`` renders them to ``report.md`` and
``report.html``): what a reader sees first is the answer (where each method fails), then the table,
then the layer and mask analysis, then where and at what cost it ran.

Only arrangement and wording live here; every number comes from a ``Summary``, its facts, or the
figures already drawn.
"""
from __future__ import annotations

import json

from smctune.report import document as doc
from smctune.report.analysis import FAILS_AT, NEVER, Summary
from smctune.report.figures.registry import ANSWER, LAYERS
from smctune.report.marks import MISSING
from smctune.report.tables import format_fail


def blocks(summaries, facts_list, drawn_list, facts_run, table: str, criterion) -> list:
    """The document, top to bottom; per architecture, ``facts_list`` holds its ``ArchitectureFacts``
    and ``drawn_list`` its ``registry.Drawn`` figures."""
    per_arch = list(zip(summaries, facts_list, drawn_list))
    return (_status(facts_run.completeness) + _answer(per_arch, criterion)
            + [doc.Heading("Method × sparsity table"), doc.Preformatted(table)]
            + _layers(per_arch) + _paper(per_arch)
            + [doc.Heading("Environment and compute"), doc.Preformatted(json.dumps(
                {"environment": facts_run.environment, "compute": facts_run.compute}, indent=1))])


def _status(completeness: dict) -> list:
    """Only for a sweep that is not (yet) complete, or a threshold search that skipped levels."""
    if completeness.get("search") == "threshold" and completeness.get("complete"):
        return [doc.Heading("Status"), doc.Paragraph(
            f"Threshold search: {completeness['finished']} of the grid's {completeness['planned']} trials "
            f"were run; the levels it skipped show {MISSING}. threshold.json holds each curve's answer.")]
    if completeness.get("complete") is not False:
        return []
    missing = completeness.get("missing") or []
    unfinished = completeness.get("unfinished") or []
    shown = ", ".join(missing[:12]) + (f", … (+{len(missing) - 12})" if len(missing) > 12 else "")
    text = (f"Partial sweep: {completeness['finished']} of {completeness['planned']} planned trials "
            f"finished; {len(missing)} have no result yet" + (f" ({shown})" if missing else "")
            + (f"; {len(unfinished)} failed or were killed" if unfinished else "")
            + f". Cells without a value show {MISSING}; continue with `smctune resume`.")
    if completeness.get("note"):
        text += f" Note: {completeness['note']}."
    return [doc.Heading("Status"), doc.Paragraph(text)]


def _answer(per_arch: list, criterion) -> list:
    out = [doc.Heading("Answer: where each method stops matching dense"),
           doc.Paragraph(f"Criterion: {criterion.label}. {CRITERION_TEXT}")]
    for summary, _facts, drawn in per_arch:
        model = f" ({summary.model})" if summary.model else ""
        rows = [(m.name, format_fail(m.fail), _outcome_note(m.fail)) for m in summary.methods]
        if rows:
            out.append(doc.Table(("method" + model, "fails at", "notes"), tuple(rows)))
        out += _figures(drawn, ANSWER)
    return out


def _layers(per_arch: list) -> list:
    out = [doc.Heading("Layerwise sparsity and masks"), doc.Paragraph(
        "Per-layer sparsity of each method's masks (layers from input to output), the correlation of "
        "those per-layer profiles between methods, and the Jaccard overlap of the kept weights of "
        "their masks at the same sparsity (mean over the seeds both have). Magnitude methods that "
        "converge to the same masks (the paper's lazy-regime observation) show Jaccard near 1.")]
    for summary, facts, drawn in per_arch:
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
        out += _figures(drawn, LAYERS)
    return out


def _paper(per_arch: list) -> list:
    papers = [(summary, facts.paper) for summary, facts, _ in per_arch if facts.paper is not None]
    if not papers:
        return []
    out = [doc.Heading("Compared with the paper (approximate)")]
    for summary, paper in papers:
        ours = summary.dense.mean if summary.dense is not None else None
        out.append(doc.Paragraph(
            f"{summary.task}{_model(summary)}: dense here {_pct(ours)} vs paper ≈{_pct(paper.dense)} "
            f"({paper.citation}). The paper fine-tunes the full models of its Table 3; a "
            f"'{summary.preset}' preset is not expected to match."))
    return out


CRITERION_TEXT = ("A level fails when its mean (over seeds, each seed averaged over folds) is below the "
                  "threshold; the failing sparsity is the first grid level that fails. 'non-monotone' means "
                  "a higher level passes again.")


def _figures(drawn, section: str) -> list:
    return [doc.Figure(d.path, d.caption) for d in drawn if d.section == section]


def _model(summary: Summary) -> str:
    return f" · {summary.model}" if summary.model else ""


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
    return MISSING if value is None else f"{value:.2f}"


def _pct(value) -> str:
    return MISSING if value is None else f"{100 * value:.1f}%"
