"""A damaged dense cache in a real sweep: the dense baseline trains again (once) instead of failing
the methods that start from it, and nothing else runs twice."""
from __future__ import annotations

import json

import pytest

from smctune.rundir.dense_cache import DenseCache
from smctune.rundir.layout import RunDir
from smctune.sweep.driver import sweep
from test_sweep import FAST_SPACE


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(FAST_SPACE)
    return path


def _truncate_model(storage) -> str:
    cache = DenseCache(RunDir(storage / "a").dense_cache_dir)
    (entry,) = [p for p in cache.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    model = entry / "model.pt"
    model.write_bytes(model.read_bytes()[:100])
    assert cache.verify(entry.name), "a truncated model.pt must not pass as cached"
    return entry.name


def _records(run: RunDir) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in run.results_dir.glob("*.json")}


def test_a_damaged_dense_entry_is_retrained_not_failed(tmp_path, space_file, ray_session):
    storage = tmp_path / "runs"
    options = dict(sparsities=(0.5,), preset="smoke", search_space=space_file, storage=storage,
                   verbosity=0, report=False)
    first = sweep("csqa", methods="dense,omp_after", name="a", **options)
    assert first.trials_run == 2
    key = _truncate_model(storage)

    # the same sweep again: only the dense baseline, whose entry is damaged, runs again
    again = sweep("csqa", methods="dense,omp_after", name="a", **options)
    assert again.trials_run == 1 and again.trials_skipped == 1
    assert DenseCache(RunDir(storage / "a").dense_cache_dir).verify(key) is None
    assert {r["status"] for r in _records(RunDir(storage / "a")).values()} == {"ok"}

    # another sweep on the same storage: its "after" method starts from the repaired entry
    _truncate_model(storage)
    other = sweep("csqa", methods="dense,omp_after", name="b", **options)
    records = _records(RunDir(storage / "b"))
    assert other.trials_run == 2 and {r["status"] for r in records.values()} == {"ok"}
    assert records["dense-dense-seed0"]["cached"] is False   # retrained, not read from the damaged entry


def test_a_second_driver_on_the_same_run_is_refused_naming_the_first(tmp_path, space_file):
    from conftest import fails
    from smctune.rundir.lock import RunLock

    storage = tmp_path / "runs"
    run = RunDir(storage / "same")
    run.root.mkdir(parents=True)
    with RunLock(run.lock_file, "sweep csqa --name same", what=f"run directory {run.root}"):
        fails(r"run directory .*same.* pid \d+", sweep, "csqa", methods="dense", sparsities=(0.5,),
              preset="smoke", search_space=space_file, storage=storage, name="same", verbosity=0)
    assert not run.sweep_file.exists() and not run.results_dir.exists()
    assert not run.lock_file.exists()   # released by its holder, untouched by the refused driver
