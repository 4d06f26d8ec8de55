"""The SMC-Bench paper's dense baselines and approximate curve points (``paper_reference.yaml``).

The values were read by eye from the paper's figures, so they are only good for "is my dense in the
same place, do my curves fall where the paper's do"; the report labels them approximate and names
the figure each came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Optional

import yaml


@dataclass(frozen=True)
class PaperReference:
    task: str
    figure: str
    source: str
    dense: Optional[float]                        # fraction (0..1), like smctune's metrics
    curves: dict = field(default_factory=dict)    # method -> {sparsity: fraction}

    @property
    def citation(self) -> str:
        return f"approximate, read from {self.figure} of {self.source}"


def paper_reference(task: str, model: Optional[str] = None) -> Optional[PaperReference]:
    """The paper's values for ``task`` (and architecture ``model``, for the arithmetic tasks)."""
    data = yaml.safe_load(resources.files("smctune.report").joinpath("paper_reference.yaml").read_text())
    entry = (data.get("tasks") or {}).get(task)
    if entry is None:
        return None
    values = entry
    if "models" in entry:
        values = (entry["models"] or {}).get(model or "")
        if values is None:
            return None
    dense = values.get("dense")
    curves = {method: {float(s): float(v) / 100 for s, v in points.items()}
              for method, points in (values.get("curves") or {}).items()}
    return PaperReference(task, entry.get("figure", ""), data.get("source", ""),
                          None if dense is None else float(dense) / 100, curves)
