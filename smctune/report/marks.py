"""The symbols the report prints, defined once so the text table, the heatmap and the document agree.

Reports get printed in greyscale and pasted into plain text, so a verdict is a symbol, never a colour.
"""
from __future__ import annotations

from smctune.report.analysis import VERDICT_FAILS, VERDICT_NOT_SIGNIFICANT, VERDICT_OK

MARKS = {VERDICT_OK: "✓", VERDICT_FAILS: "✗",
         VERDICT_NOT_SIGNIFICANT: "≈"}   # below the threshold, but not significantly (or untestable)
MARK_FAIL = MARKS[VERDICT_FAILS]
MISSING = "—"           # no value
COLLAPSED = "†"         # a trial of the cell collapsed and stopped early
LAYER_COLLAPSE = "⊘"    # a mask left whole layers 100 % pruned
