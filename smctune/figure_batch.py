"""The report's figures, drawn on every core.

Why: a report is a dozen or more PNGs per architecture (curves, heatmap, layerwise and similarity at
three levels), about 0.1 s of matplotlib each on one core, and it is the last thing between the
sweep's last trial and the prompt. The figures are independent, so helper processes
(``python -m smctune.figure_worker``) started with the batch take them one at a time as they are
queued, while this process is still computing the report's facts, and this process joins in when it
has queued the last one. Taking one at a time balances itself: figures differ in cost, and a helper
that is still importing matplotlib simply takes fewer. Processes, because matplotlib is not
thread-safe (pyplot's figure registry); started fresh rather than forked, because the driver still
has Ray's threads and a forked threaded process can hang; and not through multiprocessing's
``spawn``, which re-runs the caller's main module in the child: a user's script without a
``__main__`` guard would run twice.

A figure is a call of a module-level function (picklable) that writes the PNG at a path fixed in
advance, so the report can be assembled from the paths. Whatever goes wrong in a helper (it cannot
start, it dies, it hangs, an argument does not pickle) only means those figures are drawn here.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import UserError
from .figure_worker import READY, read_frame, write_frame

MAX_HELPERS = 4
HELPER_SECONDS, HELPER_SECONDS_PER_FIGURE = 60, 10   # then a helper is given up and its figure drawn here


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
    """``add`` figures (each returns its path at once; helpers may start drawing it), then ``run``
    draws what is left and waits for the helpers."""

    def __init__(self, helpers: Optional[int] = None):
        self._wanted = _helper_count() if helpers is None else helpers
        self._jobs: list[FigureJob] = []          # every figure added, in order
        self._pending: deque = deque()            # not taken by anyone yet
        self._returned: list[FigureJob] = []      # taken by a helper that could not draw it
        self._user_error: Optional[str] = None    # a helper's error the user must fix
        self._in_flight = 0                       # figures a helper is drawing now
        self._closing = False                     # no more figures: idle helpers stop
        self._state = threading.Condition()
        self._helpers: list[subprocess.Popen] = []
        self._serving: list[threading.Thread] = []
        self._importing: Optional[threading.Thread] = None

    def start(self, import_here: bool = False) -> "FigureBatch":
        """Start the helpers now, so their imports overlap the caller's own work. ``import_here``:
        get matplotlib ready in this process too, on a thread; worth it when there is time to spare
        (a sweep starts its batch when the first trial starts), not right before the report, where
        the thread would only slow the report's own computing."""
        if import_here and self._importing is None:
            from .figures import warm_up

            self._importing = threading.Thread(target=warm_up, name="smctune-pyplot", daemon=True)
            self._importing.start()
        while len(self._helpers) < self._wanted:
            try:
                helper = subprocess.Popen([sys.executable, "-m", "smctune.figure_worker"],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL)
            except OSError:
                break   # no helper: every figure is drawn here
            serving = threading.Thread(target=self._serve, args=(helper,), name="smctune-figures",
                                       daemon=True)
            self._helpers.append(helper)
            self._serving.append(serving)
            serving.start()
        return self

    def add(self, path, draw: Callable[..., Any], *args: Any, **kwargs: Any) -> Path:
        """``draw(*args, **kwargs)`` must write ``path`` (one of its arguments)."""
        job = FigureJob(Path(path), draw, args, kwargs)
        with self._state:
            self._jobs.append(job)
            self._pending.append(job)
            self._state.notify()
        return job.path

    def run(self) -> list[Path]:
        """Draw every figure not taken by a helper, wait for the helpers' (drawing here what they
        could not), and return every path in the order added."""
        if self._importing is not None:
            self._importing.join()   # pyplot's import is not safe to race with a first use
        try:
            with self._state:
                self._closing = True
                self._state.notify_all()
            while (job := self._take()) is not None:
                job.run()
            with self._state:
                self._state.wait_for(lambda: self._in_flight == 0,
                                     timeout=HELPER_SECONDS + HELPER_SECONDS_PER_FIGURE * len(self._jobs))
            self.close()   # a helper still drawing now hangs: its figure is handed back
            if self._user_error:
                raise UserError(self._user_error)
            for job in self._returned:
                job.run()   # a real error shows here with its own traceback
            return [job.path for job in self._jobs]
        finally:
            self.close()
            self._jobs, self._returned = [], []

    def close(self) -> None:
        with self._state:
            self._closing = True
            self._state.notify_all()
        for helper in self._helpers:
            if helper.poll() is None:
                helper.kill()
            helper.wait()
        for thread in self._serving:
            thread.join()   # ends once its helper's output does
        for helper in self._helpers:
            helper.stdout.close()
        self._helpers, self._serving = [], []

    def __getstate__(self) -> dict:
        # pickled along with Tune's callbacks (the sweep's listeners hold it): a copy draws locally
        return {"helpers": 0}

    def __setstate__(self, state: dict) -> None:
        self.__init__(helpers=state["helpers"])

    # ------------------------------------------------------------------------------ internals

    def _take(self, for_helper: bool = False) -> Optional[FigureJob]:
        """The next figure nobody has taken. A helper's thread waits until there is one or the batch
        is closing (then None), and counts it in flight in the same step, so ``run`` never sees a
        figure that is neither pending nor in flight."""
        with self._state:
            while for_helper and not self._pending and not self._closing:
                self._state.wait()
            if not self._pending:
                return None
            self._in_flight += for_helper
            return self._pending.popleft()

    def _serve(self, helper: subprocess.Popen) -> None:
        """One helper's loop, on its own thread: once it is ready, hand it one figure at a time."""
        job: Optional[FigureJob] = None
        try:
            if read_frame(helper.stdout) != READY:
                return
            while True:
                job = self._take(for_helper=True)
                if job is None:
                    return
                try:
                    frame = pickle.dumps(job)
                except Exception:  # noqa: BLE001 - not picklable (a lambda): drawn here
                    self._give_back(job)
                    job = None
                    continue
                write_frame(helper.stdin, frame)
                outcome = pickle.loads(read_frame(helper.stdout))
                if outcome is None:
                    self._done()
                elif outcome[0] == "user":
                    with self._state:
                        self._user_error = self._user_error or outcome[1]
                    self._done()
                else:
                    self._give_back(job)
                job = None
        except Exception:  # noqa: BLE001 - the helper died, hangs and was killed, or said nonsense
            if job is not None:
                self._give_back(job)
        finally:
            try:
                helper.stdin.close()   # end of input: the helper exits
            except OSError:
                pass

    def _done(self) -> None:
        with self._state:
            self._in_flight -= 1
            self._state.notify_all()

    def _give_back(self, job: FigureJob) -> None:
        with self._state:
            self._returned.append(job)
        self._done()


def _helper_count() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(cores - 1, MAX_HELPERS))
