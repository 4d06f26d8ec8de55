"""A new sqlite MLflow store is a copy of an empty one MLflow built once per version."""
from __future__ import annotations

from smctune.tracking import sqlite_template
from smctune.tracking.tracker import MLflowTracker


def test_a_seeded_store_is_one_mlflow_opens_and_writes(tmp_path, monkeypatch):
    monkeypatch.setenv(sqlite_template.CACHE_ENV, str(tmp_path / "cache"))
    first, second = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    assert sqlite_template.seed_store(f"sqlite:///{first}")
    import mlflow

    (template,) = (tmp_path / "cache").glob("*.db")
    assert template.name == f"mlflow-{mlflow.__version__}-empty.db"
    assert sqlite_template.seed_store(f"sqlite:///{second}")
    assert first.read_bytes() == second.read_bytes() == template.read_bytes()
    tracker = MLflowTracker(f"sqlite:///{second}", "smctune/t", str(tmp_path / "b"), {"sweep": "t"})
    run_id = tracker.client.create_run(tracker.experiment_id).info.run_id
    tracker.client.log_metric(run_id, "accuracy", 0.5)
    assert tracker.client.get_run(run_id).data.metrics == {"accuracy": 0.5}
    assert template.read_bytes() == first.read_bytes()   # the copy was written to, not the template
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]   # no staging left


def test_an_existing_store_and_other_uris_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv(sqlite_template.CACHE_ENV, str(tmp_path / "cache"))
    existing = tmp_path / "mlflow.db"
    existing.write_bytes(b"a resumed sweep's store")
    assert not sqlite_template.seed_store(f"sqlite:///{existing}")
    assert existing.read_bytes() == b"a resumed sweep's store"
    for uri in ("http://localhost:5000", "sqlite:///relative.db", f"sqlite:///{tmp_path}/x.db?timeout=5",
                "postgresql://db/mlflow"):
        assert not sqlite_template.seed_store(uri), uri
    assert not (tmp_path / "cache").exists()   # nothing built for them


def test_a_cache_that_cannot_be_written_falls_back_to_mlflow_creating_the_store(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(sqlite_template.CACHE_ENV, str(blocker / "cache"))   # below a file: no directory
    store = tmp_path / "run" / "mlflow.db"
    assert not sqlite_template.seed_store(f"sqlite:///{store}")
    tracker = MLflowTracker(f"sqlite:///{store}", "smctune/t", str(tmp_path / "run"), {"sweep": "t"})
    assert tracker.client.get_experiment(tracker.experiment_id).name == "smctune/t"


def test_a_damaged_template_is_rebuilt(tmp_path, monkeypatch):
    import mlflow

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv(sqlite_template.CACHE_ENV, str(cache))
    (cache / f"mlflow-{mlflow.__version__}-empty.db").write_bytes(b"truncated")
    store = tmp_path / "run" / "mlflow.db"
    assert sqlite_template.seed_store(f"sqlite:///{store}")
    assert store.read_bytes().startswith(b"SQLite format 3\x00")
