"""The driver's heartbeat: ``RunDir.heartbeat_file`` rewritten while a sweep runs, so ``smctune
status`` can tell a live sweep from one whose driver died (a killed process writes nothing about its
own death; only the heartbeat going stale says so).

Written from a thread of its own, so a busy Tune loop does not look like a dead driver.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from typing import Optional

from smctune.errors import UserError
from smctune.rundir.records import write_heartbeat

HEARTBEAT_EVERY_S = 30.0


class Heartbeat:
    """``with Heartbeat(run_dir) as beat:`` beats every ``every_s`` until the block ends; ``beat.stage
    = name`` records what the sweep runs now (and beats at once). The last beat says how it ended."""

    def __init__(self, run_dir, every_s: float = HEARTBEAT_EVERY_S):
        self.run_dir, self.every_s = run_dir, every_s
        self.beat = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": round(time.time(), 3),
                     "updated_at": None, "stage": None, "every_s": every_s}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    @property
    def stage(self) -> Optional[str]:
        return self.beat["stage"]

    @stage.setter
    def stage(self, name: str) -> None:
        self.beat["stage"] = name
        self._write()

    def __enter__(self) -> "Heartbeat":
        self._write()
        self._thread = threading.Thread(target=self._run, name="smctune-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        ended = "finished" if kind is None else \
            "interrupted" if issubclass(kind, KeyboardInterrupt) else f"failed ({kind.__name__})"
        self._write(ended_at=round(time.time(), 3), ended=ended)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._write()

    def _write(self, **end) -> None:
        with self._lock:
            self.beat.update(updated_at=round(time.time(), 3), **end)
            try:
                write_heartbeat(self.run_dir, self.beat)
            except UserError:
                pass   # a full or unwritable disk shows up in the records; status then sees it stale
