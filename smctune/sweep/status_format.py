"""``smctune status`` as text: a header, the driver line, one table row per (architecture, seed,
fold, method) with a column per sparsity, the summary counts, and why trials are not done.

Reads only the ``RunStatus`` it is given (``status.read_status``); no file, no import of Ray.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from smctune.sweep.status import DriverStatus, RunStatus

CELL = {"finished": "done", "running": "run", "pending": "pend", "failed": "FAIL",
        "collapsed": "coll", "killed": "kill", "unknown": "?"}
LIST_AT_MOST = 10


def format_resources(resources: dict) -> str:
    if not resources:
        return ""
    parts = [f"cpu {resources.get('cpu', 0):g}"]
    if resources.get("gpu"):
        parts.append(f"gpu {resources['gpu']:g}")
    if resources.get("memory_gb"):
        parts.append(f"mem {resources['memory_gb']:g} GB")
    parts += [f"{k} {v:g}" for k, v in sorted(resources.items())
              if k not in ("cpu", "gpu", "memory_gb") and isinstance(v, (int, float))]
    return ", ".join(parts)


def age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _level(sparsity: Optional[float]) -> str:
    if sparsity is None:
        return "dense"
    text = f"{sparsity:.4f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def driver_line(driver: "DriverStatus", now: float) -> str:
    """Whether a driver runs the sweep now, and when it was last heard of."""
    if not driver.seen:
        return "driver: none has run this sweep yet"
    where = f"pid {driver.pid} on {driver.host}"
    seen = age(now - driver.updated_at)
    if driver.alive:
        return f"driver: {where}, {driver.stage or 'starting'}, seen {seen} ago"
    if driver.ended:
        return f"driver: ended {age(now - (driver.ended_at or driver.updated_at))} ago ({driver.ended})"
    why = "is gone" if driver.gone else "stopped writing its heartbeat"
    return f"driver: {where} {why}, last seen {seen} ago; if it is not running, resume the sweep"


def summary_line(status: "RunStatus") -> str:
    counts = status.counts()
    needs = list(dict.fromkeys(format_resources(t.resources) for t in status.trials
                               if t.state == "pending" and t.resources))
    pending = f"{counts['pending']} pending"
    if counts["pending"] and needs:
        pending += f" ({' or '.join(needs)} each)"
    parts = [f"{counts['finished']} finished", f"{counts['running']} running", pending,
             f"{counts['failed']} failed", f"{counts['collapsed']} collapsed"]
    parts += [f"{counts[s]} {s}" for s in ("killed", "unknown") if counts[s]]
    return ", ".join(parts)


def format_table(status: "RunStatus") -> str:
    """One row per (architecture, seed, fold, method), one column per sparsity level."""
    spec = status.spec
    keys = []
    if spec.models or any(t.arch for t in status.trials):
        keys.append(("model", lambda t: t.arch or "-"))
    if len(spec.seeds) > 1:
        keys.append(("seed", lambda t: str(t.seed)))
    if spec.folds or any(t.fold is not None for t in status.trials):
        keys.append(("fold", lambda t: "-" if t.fold is None else str(t.fold)))
    keys.append(("method", lambda t: t.method))
    levels = sorted({t.sparsity for t in status.trials if t.sparsity is not None})
    columns = ([None] if any(t.sparsity is None for t in status.trials) else []) + levels
    rows: dict = {}
    for trial in status.trials:
        row = rows.setdefault(tuple(get(trial) for _, get in keys), {})
        row[trial.sparsity] = CELL[trial.state]
    header = [name for name, _ in keys] + [_level(c) for c in columns]
    body = [list(label) + [cells.get(c, "") for c in columns] for label, cells in rows.items()]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip()
             for r in [header, ["-" * w for w in widths], *body]]
    return "\n".join(lines)


def format_status(status: "RunStatus") -> str:
    spec = status.spec
    lines = [f"run {spec.name} · {spec.task} · preset {spec.preset} · {len(status.trials)} trials"]
    open_trials = any(t.state in ("running", "pending", "unknown") for t in status.trials)
    if open_trials or status.driver.alive:
        lines.append(driver_line(status.driver, status.now))
    lines += ["", format_table(status), "",
              "done finished · run running · pend pending · coll collapsed · FAIL failed · kill killed",
              "", summary_line(status)]
    details = _detail_lines(status)
    if details:
        lines += [""] + details
    return "\n".join(lines)


def _detail_lines(status: "RunStatus") -> list:
    """Running, failed, killed, collapsed and unknown trials one per line; pending grouped by why."""
    lines = []
    width = max((len(t.trial_id) for t in status.trials), default=0)
    for state in ("running", "failed", "killed", "collapsed", "unknown"):
        chosen = [t for t in status.trials if t.state == state]
        for trial in chosen[:LIST_AT_MOST]:
            lines.append(f"{state:<9}  {trial.trial_id:<{width}}  {_short(trial.detail)}".rstrip())
        if len(chosen) > LIST_AT_MOST:
            lines.append(f"{state:<9}  ... and {len(chosen) - LIST_AT_MOST} more")
    groups: dict = {}
    for trial in status.trials:
        if trial.state == "pending":
            groups.setdefault((trial.stage, trial.detail), []).append(trial)
    for (stage, detail), chosen in sorted(groups.items(), key=lambda item: item[0][0]):
        where = f" (stage {stage})" if stage else ""
        lines.append(f"{'pending':<9}  {len(chosen):>3} trial{'s' if len(chosen) != 1 else ' '}"
                     f"{where}: {detail or 'waiting'}")
    return lines


def _short(text: str, limit: int = 90) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
