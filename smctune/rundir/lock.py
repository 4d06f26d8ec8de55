"""An exclusive lock on shared storage (NFS/EFS included): one driver per run directory, one trainer
per dense-cache entry.

``fcntl``/``flock`` locks are not trusted on NFS (client-local on some mounts, lost with the lease on
others), so the lock is a file: created with ``O_CREAT|O_EXCL``, which NFSv3 and later make atomic on
the server, holding JSON that names the holder (host, pid, start time, purpose, ``updated_at``). A
second holder is refused with one line that names the first and says how to proceed.

A holder that died leaves its file behind. It is *stale*, and taken over, when it was written on this
machine by a process that no longer exists, or (any machine: a pid on another host cannot be asked)
when its ``updated_at`` is older than ``stale_after_s``; a live holder keeps it fresh with ``refresh``
(a thread of the lock's own, or the caller's heartbeat). Taking over is race-free: the stale file is
removed only by the contender that holds a second ``O_EXCL`` file (the breaker) and has judged it
stale again while holding that; it is renamed to a unique name and checked to be the very file judged
stale before it is deleted; the lock is then created anew with ``O_EXCL`` (again one winner).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Optional, Union

from smctune.errors import UserError

STALE_AFTER_S = 300.0     # a holder that has not refreshed for this long is taken for dead
REFRESH_EVERY_S = 30.0
_POLL_S = 0.2
_POLL_MAX_S = 10.0
_BREAKER_STALE_S = 30.0
_BLOCK = 512


def _machine() -> str:
    """Which process table a pid belongs to: the host name alone is shared by containers of one
    host, whose pids are not each other's; the boot id and pid namespace tell them apart."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return ":".join(parts)


def _encode(content: dict) -> bytes:
    """The lock file's bytes, padded to a whole block: a refresh rewrites them in place at the same
    length, so a reader never meets an empty or shortened file."""
    data = json.dumps(content).encode()
    return data + b" " * (-len(data) % _BLOCK)


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # EPERM: alive, another user's
        return True
    return True


def _when(stamp) -> str:
    if not isinstance(stamp, (int, float)):
        return "at an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


class RunLock:
    """``with RunLock(path, "sweep csqa"):`` holds ``path`` for the block (``UserError`` when another
    process holds it); ``acquire(wait_s)``/``release()`` for longer-lived holders.

    ``what`` names the locked thing in the refusal ("run directory /x"); ``refresh_every_s``: start a
    daemon thread that refreshes the lock (None: the caller calls ``refresh``). ``lost`` is set when
    a refresh finds the lock no longer ours (taken over after a stall longer than ``stale_after_s``).
    """

    def __init__(self, path: Union[str, os.PathLike], purpose: str, *, what: Optional[str] = None,
                 stale_after_s: float = STALE_AFTER_S,
                 refresh_every_s: Optional[float] = REFRESH_EVERY_S):
        self.path = Path(path)
        self.purpose = purpose
        self.what = what or str(self.path)
        self.stale_after_s = float(stale_after_s)
        self.refresh_every_s = refresh_every_s
        self.lost: Optional[str] = None
        self._token: Optional[str] = None
        self._fd: Optional[int] = None
        self._content: dict = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._mutex = threading.Lock()

    # ------------------------------------------------------------------------------ public
    @property
    def held(self) -> bool:
        return self._token is not None

    def acquire(self, wait_s: float = 0.0) -> "RunLock":
        """Take the lock, waiting up to ``wait_s`` (``math.inf``: for as long as it takes) for a
        live holder to let go or go stale; ``UserError`` naming the holder otherwise."""
        if self.held:
            raise RuntimeError(f"{self.path}: already held by this object")
        deadline = time.monotonic() + max(0.0, wait_s)
        pause = _POLL_S
        while True:
            holder = self._try_acquire()
            if holder is None:
                break
            if time.monotonic() >= deadline:
                raise UserError(self._refusal(holder))
            # a holder may keep it for hours (a dense model training): poll shared storage gently
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 1.5, _POLL_MAX_S)
        if self.refresh_every_s:
            self._stop.clear()
            self._thread = threading.Thread(target=self._refresh_loop, daemon=True,
                                            name=f"smctune-lock-{self.path.name}")
            self._thread.start()
        return self

    def refresh(self) -> bool:
        """Rewrite ``updated_at``; False (and ``lost`` set) when the file is no longer ours."""
        with self._mutex:
            if not self.held:
                return False
            if self.holder().get("token") != self._token:
                self.lost = f"{self.path} was taken over by another process"
                return False
            self._content["updated_at"] = round(time.time(), 3)
            try:
                # through the descriptor of the file we created, never by path: had the file been
                # taken over since the check above, this writes to the orphan, not to the new lock
                data = _encode(self._content)
                os.pwrite(self._fd, data, 0)   # same length as before: no moment of an empty file
                os.ftruncate(self._fd, len(data))
                os.fsync(self._fd)
            except OSError as err:
                self.lost = f"cannot refresh {self.path}: {err.strerror or err}"
                return False
            return True

    def release(self) -> None:
        """Remove the lock file if it is still ours; a lock taken over meanwhile is left alone."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        with self._mutex:
            token, self._token = self._token, None
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
            if token is not None:
                self._remove_if(lambda content, _stat: content.get("token") == token)

    def holder(self) -> dict:
        """The lock file's content ({} when absent or unreadable)."""
        return self._read(self.path)[0]

    def __enter__(self) -> "RunLock":
        return self if self.held else self.acquire()   # ``with lock.acquire(wait_s=...):`` too

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------------------------ inner
    def _try_acquire(self) -> Optional[dict]:
        """None when the lock is now ours; else the live holder's content."""
        for _ in range(8):   # each turn either wins, meets a live holder, or removed a stale file
            if self._create():
                return None
            content, stat = self._read(self.path)
            if stat is None:
                continue   # released meanwhile: try again
            if not self._stale(content, stat):
                return content
            with self._breaker() as breaking:
                if not breaking:   # another contender is taking it over: see who won
                    time.sleep(_POLL_S / 4)
                    continue
                content, stat = self._read(self.path)   # judged again, now that no one else can
                if stat is None:
                    continue
                if not self._stale(content, stat):
                    return content
                judged = (content.get("token"), content.get("updated_at"), stat.st_ino, stat.st_size)
                self._remove_if(lambda now, st: (now.get("token"), now.get("updated_at"),
                                                  st.st_ino, st.st_size) == judged)
        return self.holder()

    @contextlib.contextmanager
    def _breaker(self):
        """The right to remove a stale lock, itself an ``O_EXCL`` file: without it two contenders
        that both judged the lock stale could remove, the later one, the lock the first just made.
        Held for milliseconds, so one older than ``_BREAKER_STALE_S`` was left by a crash."""
        path = self.path.with_name(self.path.name + ".break")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > _BREAKER_STALE_S:
                    os.unlink(path)
            yield False
            return
        except OSError as err:
            raise UserError(f"cannot create {path}: {err.strerror or err}") from None
        try:
            yield True
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _create(self) -> bool:
        token = uuid.uuid4().hex
        now = round(time.time(), 3)
        content = {"host": socket.gethostname(), "machine": _machine(), "pid": os.getpid(),
                   "started_at": now, "updated_at": now, "purpose": self.purpose, "token": token}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as err:
            raise UserError(f"cannot create lock {self.path}: {err.strerror or err}") from None
        try:
            os.write(fd, _encode(content))
            os.fsync(fd)
        except OSError as err:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise UserError(f"cannot write lock {self.path}: {err.strerror or err}") from None
        self._fd, self._token, self._content, self.lost = fd, token, content, None
        return True

    def _stale(self, content: dict, stat: os.stat_result) -> bool:
        now = time.time()
        if not content:   # being written, or torn by a crash between create and write: by age only
            return now - stat.st_mtime > self.stale_after_s
        if content.get("machine") == _machine() and not _pid_alive(content.get("pid")):
            return True
        updated = content.get("updated_at")
        latest = max(updated if isinstance(updated, (int, float)) else 0.0, stat.st_mtime)
        return now - latest > self.stale_after_s

    def _remove_if(self, still) -> None:
        """Remove the lock file if ``still(content, stat)`` holds for it. It is renamed to a unique
        name first, so the check applies to the very file removed; a file that fails the check (a
        fresh lock created since it was judged) is linked back unless another took its place."""
        aside = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex}.aside")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        except OSError as err:
            raise UserError(f"cannot remove lock {self.path}: {err.strerror or err}") from None
        content, stat = self._read(aside)
        if stat is not None and not still(content, stat):
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        with contextlib.suppress(OSError):
            os.unlink(aside)

    @staticmethod
    def _read(path: Path) -> tuple[dict, Optional[os.stat_result]]:
        try:
            with open(path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                raw = handle.read()
        except FileNotFoundError:
            return {}, None
        except OSError:
            return {}, None
        try:
            content = json.loads(raw)
        except ValueError:
            return {}, stat
        return (content if isinstance(content, dict) else {}), stat

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_every_s):
            if not self.refresh():
                return

    def _refusal(self, holder: dict) -> str:
        if not holder:
            who = "another process (its lock file is being written or is unreadable)"
        else:
            who = (f"another smctune ({holder.get('purpose') or 'unknown purpose'}; host "
                   f"{holder.get('host', '?')}, pid {holder.get('pid', '?')}, started "
                   f"{_when(holder.get('started_at'))}, last update {_when(holder.get('updated_at'))})")
        minutes = self.stale_after_s / 60
        return (f"{self.what} is in use by {who}; wait for it to finish, or if that process is gone "
                f"remove {self.path} (a lock not updated for {minutes:g} min is taken over)")
