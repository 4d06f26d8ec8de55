"""Where everything of a run lives, and the one way files get there.

A run directory sits on shared storage that the driver, Ray workers, ``status`` and ``report`` read
while others write. Two rules keep that safe, and both live here so no module can forget them:

* every path is named once, by ``RunDir`` (a renamed file is one edit, and a reader cannot look for
  a file under a name the writer no longer uses);
* every file is written through ``atomic_path``/``write_atomic``: to a temporary name beside the
  target, then renamed over it, so a crash, a full disk or a concurrent reader never sees half a file.
  The temporary is created with ``open`` (not ``mkstemp``, whose 0600 mode would survive the rename),
  so results get the umask's permissions like any other output; the pid keeps two writers apart.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

from smctune.errors import UserError

DENSE_CACHE_DIRNAME = "dense_cache"   # beside the run directories: shared by every run of the storage


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory. Nothing is created by constructing one."""

    root: Path

    def __init__(self, root: Union[str, os.PathLike]):
        object.__setattr__(self, "root", Path(root))

    # what the driver writes before the first trial
    @property
    def sweep_file(self) -> Path:
        """The resolved ``SweepSpec`` (``SweepSpec.to_json``): what ``resume`` and ``report`` rebuild from."""
        return self.root / "sweep.json"

    @property
    def plan_file(self) -> Path:
        """The planned trial ids and the search mode: what "complete" is measured against."""
        return self.root / "plan.json"

    @property
    def environment_file(self) -> Path:
        return self.root / "environment.json"

    @property
    def search_space_file(self) -> Path:
        """The resolved search space the sweep ran with: ``resume``, ``status`` and ``report`` read it,
        never the user's file (which may be gone) or the packaged one (which may have changed)."""
        return self.root / "search_space.yaml"

    @property
    def lock_file(self) -> Path:
        """Held by the one driver writing this run directory (``rundir.lock.RunLock``)."""
        return self.root / "driver.lock"

    @property
    def mlflow_db(self) -> Path:
        """The default tracking store (``sqlite:///`` of this path) when no ``--mlflow-uri`` is given."""
        return self.root / "mlflow.db"

    # what the sweep writes while it runs
    @property
    def results_dir(self) -> Path:
        """One JSON record per trial: the run's source of truth for ``report``, ``status`` and resume."""
        return self.root / "results"

    def record_file(self, trial_id: str) -> Path:
        return self.results_dir / f"{plain_trial_id(trial_id)}.json"

    @property
    def live_dir(self) -> Path:
        """One live record per trial that has started and not ended (``status`` reads them)."""
        return self.root / "live"

    def live_file(self, trial_id: str) -> Path:
        return self.live_dir / f"{plain_trial_id(trial_id)}.json"

    @property
    def heartbeat_file(self) -> Path:
        """The driver's heartbeat: pid, host, stage, ``updated_at``, and ``ended_at`` once it stopped."""
        return self.root / "driver.json"

    @property
    def masks_dir(self) -> Path:
        return self.root / "masks"

    @property
    def ray_dir(self) -> Path:
        """Ray Tune's ``storage_path``: its experiment state and the trials' checkpoints."""
        return self.root / "ray"

    def stage_dir(self, stage: int) -> Path:
        return self.ray_dir / f"stage{stage}"

    @property
    def optuna_journal(self) -> Path:
        """The cell searcher's Optuna studies (``JournalStorage``, a text journal)."""
        return self.root / "optuna.journal"

    @property
    def threshold_file(self) -> Path:
        return self.root / "threshold.json"

    # what ``report`` writes
    @property
    def results_json(self) -> Path:
        return self.root / "results.json"

    @property
    def curves_png(self) -> Path:
        return self.root / "curves.png"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def similarity_cache(self) -> Path:
        """Mask overlaps already computed, so the next report computes only new pairs."""
        return self.root / "similarity_cache.json"

    # shared by every run of the same storage root
    @property
    def dense_cache_dir(self) -> Path:
        return self.root.parent / DENSE_CACHE_DIRNAME


def names_ending(directory: Union[str, os.PathLike], suffixes: Union[str, tuple]) -> list[str]:
    """File names in ``directory`` ending with one of ``suffixes``, sorted as strings. Names, not
    paths: sorting 20k ``Path`` objects cost more than reading the files they name."""
    return sorted(entry.name for entry in os.scandir(directory) if entry.name.endswith(suffixes))


def plain_trial_id(trial_id: str) -> str:
    """``trial_id`` when it can name a file in its directory and nothing else. Ids reach file names
    from records, Tune configs and MLflow tags, all on shared storage; one holding a separator or
    starting with a dot would address a file outside the run directory, so it is refused."""
    if not trial_id or trial_id.startswith(".") or any(c in trial_id for c in "/\\\0"):
        raise UserError(f"not a trial id: {trial_id!r} (a trial id names a file: no '/', '\\', "
                        "NUL or leading '.')")
    return trial_id


@contextlib.contextmanager
def atomic_path(path: Union[str, os.PathLike]) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed over ``path`` when the block ends
    without an exception, removed otherwise. For writers that want a file name (``savefig``,
    ``torch.save``, ``np.savez``); ``write_atomic`` is the short form for bytes and text.

    An ``OSError`` becomes a one-line ``UserError`` naming the path and the reason: an unwritable or
    full output directory is something the user fixes, not a bug to show a traceback for."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield staging
        os.replace(staging, path)
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        with contextlib.suppress(OSError):
            staging.unlink(missing_ok=True)


def write_atomic(path: Union[str, os.PathLike], data: Union[bytes, str]) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; see ``atomic_path``."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as staging:
        with open(staging, "wb") as handle:
            handle.write(payload)
    return Path(path)
