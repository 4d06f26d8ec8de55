"""``write_report``: a run directory in, the report's files out (``results.json``, the figures,
``report.md``, a self-contained ``report.html``) plus the text table ``smctune report`` prints.

This module only orchestrates, in the order a reader could follow by hand: read the run (``load``),
summarise it per architecture (``analysis``), add the layer, mask and run facts (``facts``), draw
(``figures.registry``), write ``results.json`` (``results_json``), lay out (``build``) and render
(``document``). It works on partial runs, and needs neither Ray nor torch: matplotlib is imported
only when the first figure is drawn.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from smctune.report import build
from smctune.report import document
from smctune.report.analysis import Summary, summarize_all
from smctune.report.criterion import Criterion
from smctune.report.facts import architecture_facts, run_facts
from smctune.report.figures.registry import draw_figures
from smctune.report.load import load_run
from smctune.report.results_json import write_results_json
from smctune.report.tables import format_table
from smctune.rundir.layout import RunDir, write_atomic



@dataclass(frozen=True)
class ReportOptions:
    metric: str = "best"
    criterion: Criterion = Criterion()
    compare_paper: bool = False
    layer_levels: Optional[tuple] = None    # None: the grid levels nearest the paper's layerwise figures
    out_dir: Optional[Path] = None          # None: the run directory


@dataclass(frozen=True)
class ReportPaths:
    results_json: Path
    curves_png: Path          # the first architecture's plot when a sweep ran several
    table: str
    summary: Summary          # likewise the first; ``summaries`` holds every one
    summaries: tuple = ()
    plots: tuple = ()         # the curves, one per architecture
    figures: tuple = ()       # every PNG written (curves included)
    markdown: Optional[Path] = None
    html: Optional[Path] = None

    @property
    def plot(self) -> Path:
        return self.curves_png

    @property
    def files(self) -> tuple:
        return tuple(p for p in (self.results_json, self.markdown, self.html, *self.figures) if p)


def write_report(run_dir: Union[str, Path], options: ReportOptions = ReportOptions()) -> ReportPaths:
    """Write results.json, the figures, report.md and report.html (into ``options.out_dir`` or the
    run directory); return their paths and the text table. Works on partial runs."""
    run = load_run(run_dir)
    summaries = summarize_all(run, metric=options.metric, criterion=options.criterion)
    out = RunDir(options.out_dir or run_dir)
    several = len(summaries) > 1
    facts, drawn = [], []
    for summary in summaries:
        facts.append(architecture_facts(run, summary, options.compare_paper))
        drawn.append(draw_figures(run, summary, facts[-1], out.root, f"-{summary.model}" if several else "",
                                  options.layer_levels))
    facts_run = run_facts(run)
    results = write_results_json(summaries, out.results_json, facts, facts_run)
    table = "\n\n".join(format_table(s) for s in summaries)
    title = f"smctune report: {summaries[0].task} · preset {summaries[0].preset} · run {summaries[0].name}"
    blocks = build.blocks(summaries, facts, drawn, facts_run, table, options.criterion)
    markdown = write_atomic(out.report_md, document.to_markdown(title, blocks, out.root))
    html = write_atomic(out.report_html, document.to_html(title, blocks))
    plots = tuple(d.path for figures in drawn for d in figures if d.kind == "curves")
    return ReportPaths(results_json=results, curves_png=plots[0], table=table, summary=summaries[0],
                       summaries=tuple(summaries), plots=plots,
                       figures=tuple(d.path for figures in drawn for d in figures), markdown=markdown, html=html)
