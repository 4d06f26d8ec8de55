"""Content-addressed cache of dense fine-tuned checkpoints.

Every "after" method and LTH start from the same dense fine-tuned weights. Training them once per
(task, seed, preset, model, training settings, data) and reusing them is both the largest saving of a
sweep and what makes "after" methods comparable: they prune the very model the dense baseline reports.
The key is ``TrialSpec.dense_key()``; an entry is a directory built under a temporary name and
renamed into place whole, so a crash mid-write never leaves a half entry that a later trial would
trust. The cache sits beside the run directories (``RunDir.dense_cache_dir``): every run of the same
storage shares it.

Shared storage also loses or damages files after they were written (a truncated copy, a partial
restore, a hand-deleted ``model.pt``), so an entry is trusted only when it verifies: ``meta.json``
holds the sha256 of every weights file, checked before the entry counts as cached (``has``) and before
it is loaded. A damaged entry is ``discard``-ed (renamed aside whole, so a reader never sees half of
it) and retrained; ``training`` holds the key's lock (``rundir.lock``, safe on NFS) around that, so
exactly one process retrains it and the others wait for its entry. Weights are read with
``torch.load(weights_only=True)`` (``rundir.safe_load``): a file on shared storage never runs code.

Two processes saving the same key at once need no lock for a correct entry: the rename into place
succeeds for one of them (a directory is not renamed over a non-empty one) and the other drops its
copy. Only replacing a damaged entry needs the key's lock, so two savers never move each other's good
entry aside; the lock is what keeps them from training the same key twice.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Iterator, Optional

from smctune.errors import UserError
from smctune.rundir.layout import write_atomic
from smctune.rundir.lock import RunLock
from smctune.rundir.safe_load import load_tensors

META = "meta.json"
WEIGHTS = ("model.pt", "best.pt")
CHECKSUMS = "sha256"          # meta.json: weights file name -> hex digest
_CHUNK = 1 << 20


class DenseCacheError(UserError):
    """A cache entry that cannot be used: the message names the file and what is wrong with it."""


class DenseCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        # (key, files' identity) -> verify's answer: hashing a large checkpoint once per process is
        # enough, and any change to a file (rewritten, replaced, truncated) changes its identity
        self._verified: dict = {}

    def entry(self, key: str) -> Path:
        return self.root / key

    def lock_path(self, key: str) -> Path:
        return self.root / f".{key}.lock"

    def lock(self, key: str, purpose: str, **options) -> RunLock:
        """The lock that lets one process (re)train ``key``: ``with cache.lock(key, "dense csqa"):``,
        or ``.acquire(wait_s)``. ``options``: ``RunLock``'s (``stale_after_s``, ``refresh_every_s``)."""
        return RunLock(self.lock_path(key), purpose, what=f"dense cache entry {key}", **options)

    @contextlib.contextmanager
    def training(self, key: str, purpose: str, wait_s: float = math.inf) -> Iterator[bool]:
        """``with cache.training(key, "dense csqa seed 0") as needed:`` holds the key's lock for the
        block (waiting while another process trains it); ``needed`` is False when a whole entry
        exists by then (use it), True otherwise, a damaged entry having been moved aside: train,
        then ``save(..., locked=True)``. So a lost or damaged entry is retrained exactly once."""
        with self.lock(key, purpose).acquire(wait_s=wait_s):
            if self.has(key):
                yield False
                return
            self._discard_damaged(key)
            yield True

    # ------------------------------------------------------------------------------ reading
    def has(self, key: str) -> bool:
        """Whether ``key`` is cached and whole (see ``verify``)."""
        return self.verify(key) is None

    def exists(self, key: str) -> bool:
        """Whether an entry directory exists at all, whole or damaged."""
        return self.entry(key).is_dir()

    def verify(self, key: str) -> Optional[str]:
        """None when the entry of ``key`` is whole; otherwise one line naming the file and the
        problem (``"not cached"`` wording when there is no entry at all)."""
        directory = self.entry(key)
        if not directory.is_dir():
            return f"{directory}: not cached"
        identity = (key,) + tuple(_identity(directory / name) for name in (META,) + WEIGHTS)
        if identity not in self._verified:
            self._verified = {k: v for k, v in self._verified.items() if k[0] != key}
            self._verified[identity] = _check(directory)
        return self._verified[identity]

    def meta(self, key: str) -> Optional[dict]:
        """The entry's ``meta.json`` (None when the entry does not verify)."""
        if not self.has(key):
            return None
        return _read_meta(self.entry(key) / META)[0]

    def load_state(self, key: str, map_location: str = "cpu", which: str = "final") -> dict:
        """The dense weights: ``which="final"`` (end of fine-tuning) or ``"best"`` (best evaluation;
        the final weights when the best evaluation was the last one). ``DenseCacheError`` naming the
        file when the entry is missing or damaged, or the file is not plain tensors."""
        problem = self.verify(key)
        if problem is not None:
            raise DenseCacheError(f"dense checkpoint unusable: {problem}")
        path = self.entry(key) / ("best.pt" if which == "best" else "model.pt")
        if which == "best" and not path.is_file():
            path = self.entry(key) / "model.pt"
        return load_tensors(path, map_location=map_location, error=DenseCacheError)

    # ------------------------------------------------------------------------------ writing
    def save(self, key: str, state_dict: dict, meta: dict, best_state: Optional[dict] = None, *,
             locked: bool = False) -> Path:
        """``state_dict``: the final weights (what "after" methods start from by default);
        ``best_state``: the weights at the best evaluation, kept for ``dense_checkpoint: best``
        (SMC-Bench's choice). A damaged entry in the way is replaced, under the key's lock (``locked``:
        the caller holds it); a whole one (another process saved first) is kept and ours dropped."""
        import torch

        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))
        try:
            sums = {}
            for name, state in zip(WEIGHTS, (state_dict, best_state)):
                if state is not None:
                    torch.save({k: tensor.detach().cpu() for k, tensor in state.items()}, staging / name)
                    sums[name] = _sha256(staging / name)
            write_atomic(staging / META, json.dumps(dict(meta, **{CHECKSUMS: sums}), indent=2,
                                                    sort_keys=True))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        target = self.entry(key)
        if not self._install(staging, target) and self.verify(key) is not None:
            # a damaged entry is in the way: replace it under the key's lock, so two savers never
            # move each other's good entry aside; another holder of the lock is replacing it already
            with contextlib.suppress(UserError):
                with (contextlib.nullcontext() if locked else
                      self.lock(key, "replace a damaged dense entry", refresh_every_s=None)):
                    if self.verify(key) is not None:
                        self._move_aside(key)
                    self._install(staging, target)
        shutil.rmtree(staging, ignore_errors=True)   # gone already unless another entry won
        return target

    def discard(self, key: str, *, locked: bool = False) -> Optional[str]:
        """Move a damaged entry of ``key`` aside (one rename: readers see the whole entry or none)
        and delete it, so the next dense trial retrains it. Returns the damage found, None when the
        entry was whole or absent (then nothing is touched). Takes the key's lock unless the caller
        holds it (``locked``); ``UserError`` naming the holder when another process does."""
        if locked or not self.exists(key):
            return self._discard_damaged(key)
        with self.lock(key, "discard a damaged dense entry", refresh_every_s=None):
            return self._discard_damaged(key)

    def _discard_damaged(self, key: str) -> Optional[str]:
        problem = self.verify(key)
        if problem is None or not self.exists(key):
            return None
        self._move_aside(key)
        return problem

    def _move_aside(self, key: str) -> None:
        aside = self.root / f".{key}.damaged-{uuid.uuid4().hex[:12]}"
        try:
            os.rename(self.entry(key), aside)
        except FileNotFoundError:
            return
        except OSError as err:
            raise UserError(f"cannot move damaged dense entry {self.entry(key)} aside: "
                            f"{err.strerror or err}") from None
        shutil.rmtree(aside, ignore_errors=True)

    @staticmethod
    def _install(staging: Path, target: Path) -> bool:
        try:
            staging.rename(target)
        except OSError:   # an entry is there already (ENOTEMPTY/EEXIST)
            return False
        return True


# ---------------------------------------------------------------------------------- checks

def _identity(path: Path) -> Optional[tuple]:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_meta(path: Path) -> tuple[Optional[dict], Optional[str]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{path}: missing"
    except (OSError, ValueError) as err:
        return None, f"{path}: not readable JSON ({type(err).__name__})"
    if not isinstance(data, dict):
        return None, f"{path}: not a JSON object"
    for field, kind in (("history", list), ("metric", str)):
        if not isinstance(data.get(field), kind):
            return None, f"{path}: field {field!r} missing or not a {kind.__name__}"
    return data, None


def _check(directory: Path) -> Optional[str]:
    meta, problem = _read_meta(directory / META)
    if problem:
        return problem
    model = directory / "model.pt"
    if not model.is_file():
        return f"{model}: missing"
    sums = meta.get(CHECKSUMS)
    if sums is None:
        # an entry from before checksums were written: the zip container's own CRCs still tell a
        # truncated or altered file (torch.save writes a zip archive)
        return _check_zip_crcs([directory / name for name in WEIGHTS if (directory / name).is_file()])
    if not isinstance(sums, dict) or "model.pt" not in sums:
        return f"{directory / META}: field {CHECKSUMS!r} malformed"
    for name, expected in sums.items():
        path = directory / str(name)
        if str(name) not in WEIGHTS:
            return f"{directory / META}: checksum for an unknown file {name!r}"
        try:
            actual = _sha256(path)
        except FileNotFoundError:
            return f"{path}: missing"
        except OSError as err:
            return f"{path}: unreadable ({err.strerror or err})"
        if actual != expected:
            return f"{path}: checksum mismatch (damaged or replaced since it was written)"
    return None


def _check_zip_crcs(paths) -> Optional[str]:
    for path in paths:
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (OSError, zipfile.BadZipFile, ValueError, EOFError) as err:
            return f"{path}: not a whole checkpoint ({type(err).__name__})"
        if bad is not None:
            return f"{path}: damaged (bad CRC in {bad})"
    return None
