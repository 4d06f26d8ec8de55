"""Mask overlaps a previous report computed, kept in the run directory: a report of a 20,000-trial
run compares about 150,000 mask pairs, and a report run while the sweep goes on (or run again with
other options) should only compare the pairs of masks it has not seen.

An entry is keyed by the two mask files' names and holds each file's size and modification time:
a mask rewritten since (a retried trial) no longer matches and its pairs are computed again. The file
is JSON read field by field (never trusted: a malformed entry is a miss); it is rewritten atomically
at the end of a report that computed something new, and a run directory the reader cannot write
(someone else's run on shared storage) simply gets no cache.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Optional

from smctune.errors import UserError
from smctune.rundir.layout import RunDir, write_atomic

FORMAT = "smctune.similarity-cache/1"


class JaccardCache:
    """Mask file pair -> Jaccard (or None: no common tensor, nothing kept)."""

    def __init__(self, run_dir: os.PathLike):
        self.path = RunDir(run_dir).similarity_cache
        self._pairs: dict = self._read()
        self._signatures: dict[Path, Optional[list]] = {}
        self.changed = False
        self.hits = self.misses = 0

    def get(self, path_a: Path, path_b: Path) -> tuple[bool, Optional[float]]:
        """(found, value) for the pair as the files are now."""
        entry = self._pairs.get(self._key(path_a, path_b))
        signature = self._pair_signature(path_a, path_b)
        if (isinstance(entry, list) and len(entry) == 2 and entry[0] == signature and signature is not None
                and _valid_value(entry[1])):
            self.hits += 1
            return True, entry[1]
        self.misses += 1
        return False, None

    def put(self, path_a: Path, path_b: Path, value: Optional[float]) -> None:
        signature = self._pair_signature(path_a, path_b)
        if signature is not None:
            self._pairs[self._key(path_a, path_b)] = [signature, value]
            self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        with contextlib.suppress(OSError, UserError):   # read-only storage: no cache, same report
            write_atomic(self.path, json.dumps({"format": FORMAT, "pairs": self._pairs}, separators=(",", ":")))
            self.changed = False

    # ------------------------------------------------------------------------------------------
    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return {}
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("pairs"), dict):
            return {}
        return data["pairs"]

    @staticmethod
    def _key(path_a: Path, path_b: Path) -> str:
        name_a, name_b = path_a.name, path_b.name
        return f"{name_a}\t{name_b}" if name_a <= name_b else f"{name_b}\t{name_a}"

    def _pair_signature(self, path_a: Path, path_b: Path) -> Optional[list]:
        first, second = (path_a, path_b) if path_a.name <= path_b.name else (path_b, path_a)
        parts = self._signature(first), self._signature(second)
        return None if parts[0] is None or parts[1] is None else parts[0] + parts[1]

    def _signature(self, path: Path) -> Optional[list]:
        if path not in self._signatures:
            try:
                stat = os.stat(path)
                self._signatures[path] = [stat.st_size, stat.st_mtime_ns]
            except OSError:
                self._signatures[path] = None
        return self._signatures[path]


def _valid_value(value) -> bool:
    if value is None:
        return True
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and 0.0 <= value <= 1.0)
