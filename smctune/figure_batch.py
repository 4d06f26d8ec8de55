"""The report's figures, drawn on every core.

Why: a report is a dozen or more PNGs per architecture (curves, heatmap, layerwise and similarity at
three levels), about 0.1 s of matplotlib each on one core, and it is the last thing between the
sweep's last trial and the prompt. The figures are independent, so a share goes to helper processes
(``python -m smctune.figure_worker``) started with the batch, which import matplotlib while this
process computes the report's facts. Processes, because matplotlib is not thread-safe (pyplot's
figure registry); started fresh rather than forked, because the driver still has Ray's threads and
a forked threaded process can hang; and not through multiprocessing's ``spawn``, which re-runs the
caller's main module in the child: a user's script without a ``__main__`` guard would run twice.

A figure is a call of a module-level function (picklable) that writes the PNG at a path fixed in
advance, so the report can be assembled from the paths. Whatever goes wrong in a helper (it cannot
start, it dies, an argument does not pickle) only means those figures are drawn here.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import UserError

MIN_FIGURES_FOR_HELPERS = 4     # fewer: the helper's start-up (~0.5 s of imports) buys nothing
MAX_HELPERS = 4
HELPER_SECONDS, HELPER_SECONDS_PER_FIGURE = 60, 10   # then a helper is given up and its share drawn here


@dataclass(frozen=True)
class FigureJob:
    path: Path
    draw: Callable[..., Any]
    args: tuple
    kwargs: dict

    def run(self) -> Path:
        self.draw(*self.args, **self.kwargs)
        return self.path


class FigureBatch:
    """``add`` figures (each returns its path at once), then ``run`` draws them all."""

    def __init__(self, helpers: Optional[int] = None):
        self.jobs: list[FigureJob] = []
        self._wanted = _helper_count() if helpers is None else helpers
        self._helpers: list[subprocess.Popen] = []
        self._importing: Optional[threading.Thread] = None

    def start(self, import_here: bool = False) -> "FigureBatch":
        """Start the helpers now, so their imports overlap the caller's own work before ``run``.
        ``import_here``: import matplotlib in this process too, on a thread; worth it when there is
        time to spare (a sweep starts its batch when the first trial starts), not right before the
        report, where the thread would only slow the report's own computing."""
        if import_here and self._importing is None:
            from .figures import load_pyplot

            self._importing = threading.Thread(target=load_pyplot, name="smctune-pyplot", daemon=True)
            self._importing.start()
        while len(self._helpers) < self._wanted:
            try:
                self._helpers.append(subprocess.Popen(
                    [sys.executable, "-m", "smctune.figure_worker"], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
            except OSError:
                break   # no helper: every figure is drawn here
        return self

    def add(self, path, draw: Callable[..., Any], *args: Any, **kwargs: Any) -> Path:
        """``draw(*args, **kwargs)`` must write ``path`` (one of its arguments)."""
        job = FigureJob(Path(path), draw, args, kwargs)
        self.jobs.append(job)
        return job.path

    def run(self) -> list[Path]:
        jobs, self.jobs = self.jobs, []
        helpers = self._helpers if len(jobs) >= MIN_FIGURES_FOR_HELPERS else []
        if self._importing is not None:
            self._importing.join()   # pyplot's import is not safe to race with a first use
        try:
            mine, theirs = _split(jobs, len(helpers))
            sent = [(helper, theirs[i], _send(helper, theirs[i])) for i, helper in enumerate(helpers)]
            for job in mine:
                job.run()
            for helper, share, writer in sent:
                _collect(helper, share, writer)
            return [job.path for job in jobs]
        finally:
            self.close()

    def close(self) -> None:
        for helper in self._helpers:
            if helper.poll() is None:
                helper.kill()
            helper.wait()
            for stream in (helper.stdin, helper.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
        self._helpers = []

    def __getstate__(self) -> dict:
        # pickled along with Tune's callbacks (the sweep's listeners hold it): a copy draws locally
        return {"jobs": [], "_wanted": 0, "_helpers": [], "_importing": None}


def _split(jobs: list, helpers: int) -> tuple[list, list]:
    """This process's figures and each helper's: even shares, the odd one out to a helper, since
    this process assembles the documents afterwards."""
    if not helpers:
        return jobs, []
    mine = max(1, len(jobs) // (helpers + 1))
    rest = jobs[mine:]
    return jobs[:mine], [rest[i::helpers] for i in range(helpers)]


def _helper_count() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(cores - 1, MAX_HELPERS))


def _send(helper: subprocess.Popen, share: list) -> threading.Thread:
    """Written from a thread: the helper reads only after its imports, and a pipe holds 64 KiB."""
    def write() -> None:
        try:
            helper.stdin.write(pickle.dumps(share))
        except Exception:  # noqa: BLE001 - unpicklable or a dead helper: _collect redraws the share
            pass
        finally:
            try:
                helper.stdin.close()   # end of input, also when nothing was sent: the helper exits
            except OSError:
                pass
    writer = threading.Thread(target=write, name="smctune-figures", daemon=True)
    writer.start()
    return writer


def _collect(helper: subprocess.Popen, share: list, writer: threading.Thread) -> None:
    """The helper's outcome per figure; what it did not draw is drawn here, so a real error shows
    with its own traceback. Only an error the user must fix (an output directory that cannot be
    written) is passed on as the helper saw it."""
    writer.join()
    helper.stdin = None   # closed by the writer; communicate() must not flush it again
    outcomes: list = []
    try:
        out, _ = helper.communicate(timeout=HELPER_SECONDS + HELPER_SECONDS_PER_FIGURE * len(share))
        outcomes = pickle.loads(out)
    except Exception:  # noqa: BLE001 - the helper died or hangs: nothing it said counts
        helper.kill()
        outcomes = []
    for i, job in enumerate(share):
        outcome = outcomes[i] if i < len(outcomes) else ("missing", "")
        if outcome is None:
            continue
        if outcome[0] == "user":
            raise UserError(outcome[1])
        job.run()
