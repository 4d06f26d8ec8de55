"""The dense cache on shared storage (``smctune.rundir.dense_cache``): checksums verified before an
entry counts as cached, a damaged entry named, discarded and rewritten, a planted pickle never run."""
from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch

from smctune.errors import UserError
from smctune.rundir.dense_cache import DenseCache, DenseCacheError

KEY = "0123abcd"
META = {"key": KEY, "metric": "accuracy", "history": [{"step": 1, "accuracy": 0.5}], "best": 0.5,
        "final": 0.5, "step": 1}


def _weights(value: float = 1.0) -> dict:
    return {"layer.weight": torch.full((4, 3), value), "layer.bias": torch.zeros(4)}


@pytest.fixture
def cache(tmp_path):
    cache = DenseCache(tmp_path / "dense_cache")
    cache.save(KEY, _weights(), META, best_state=_weights(2.0))
    return cache


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_saved_entry_verifies_loads_and_records_checksums(cache):
    assert cache.has(KEY) and cache.verify(KEY) is None
    meta = cache.meta(KEY)
    assert set(meta["sha256"]) == {"model.pt", "best.pt"} and meta["history"] == META["history"]
    assert torch.equal(cache.load_state(KEY)["layer.weight"], _weights()["layer.weight"])
    assert torch.equal(cache.load_state(KEY, which="best")["layer.weight"], _weights(2.0)["layer.weight"])
    assert not cache.has("other") and "not cached" in cache.verify("other")
    assert [p.name for p in cache.root.iterdir()] == [KEY]   # no staging or lock left behind


DAMAGE = {
    "truncated model.pt": ("model.pt", _truncate, "checksum mismatch"),
    "deleted model.pt": ("model.pt", Path.unlink, "missing"),
    "flipped byte in model.pt": ("model.pt", _flip, "checksum mismatch"),
    "deleted best.pt": ("best.pt", Path.unlink, "missing"),
    "garbage meta.json": ("meta.json", lambda p: p.write_bytes(b"\x00garbage{"), "not readable JSON"),
    "meta.json not an object": ("meta.json", lambda p: p.write_text("[1, 2]"), "not a JSON object"),
    "meta.json without history": ("meta.json", lambda p: p.write_text(json.dumps({"metric": "a"})),
                                  "'history' missing"),
    "deleted meta.json": ("meta.json", Path.unlink, "missing"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_entry_is_named_not_cached_and_not_loaded(cache, damage):
    name, act, problem = DAMAGE[damage]
    act(cache.entry(KEY) / name)
    fresh = DenseCache(cache.root)   # another process: nothing remembered from the save
    reason = fresh.verify(KEY)
    assert reason is not None and str(cache.entry(KEY) / name) in reason and problem in reason
    assert "\n" not in reason
    assert not fresh.has(KEY) and fresh.meta(KEY) is None and fresh.exists(KEY)
    with pytest.raises(DenseCacheError, match="dense checkpoint unusable") as caught:
        fresh.load_state(KEY)
    assert str(cache.entry(KEY) / name) in str(caught.value)


def test_damage_after_a_verification_in_the_same_process_is_noticed(cache):
    assert cache.has(KEY)
    (cache.entry(KEY) / "model.pt").unlink()
    assert not cache.has(KEY)


def test_discard_moves_a_damaged_entry_aside_and_a_new_save_replaces_it(cache):
    _truncate(cache.entry(KEY) / "model.pt")
    fresh = DenseCache(cache.root)
    assert "checksum mismatch" in fresh.discard(KEY)
    assert not fresh.exists(KEY)
    assert list(cache.root.iterdir()) == []   # moved aside, then deleted: nothing half-removed left
    fresh.save(KEY, _weights(3.0), META)
    assert fresh.has(KEY)
    assert float(fresh.load_state(KEY)["layer.weight"][0, 0]) == 3.0
    assert fresh.discard(KEY) is None and fresh.has(KEY)   # a whole entry is never discarded


def test_a_save_over_a_damaged_entry_replaces_it(cache):
    (cache.entry(KEY) / "model.pt").unlink()
    fresh = DenseCache(cache.root)
    fresh.save(KEY, _weights(3.0), META)
    assert fresh.has(KEY) and float(fresh.load_state(KEY)["layer.weight"][0, 0]) == 3.0
    assert [p.name for p in cache.root.iterdir()] == [KEY]


def test_the_holder_of_the_key_replaces_a_damaged_entry_others_leave_it_to_the_holder(cache):
    (cache.entry(KEY) / "model.pt").unlink()
    holder = cache.lock(KEY, "dense csqa seed 0", refresh_every_s=None).acquire()
    try:
        other = DenseCache(cache.root)
        other.save(KEY, _weights(4.0), META)   # not the holder: the damaged entry is left to it
        assert not other.has(KEY)
        other.save(KEY, _weights(3.0), META, locked=True)   # the holder
        assert other.has(KEY) and float(other.load_state(KEY)["layer.weight"][0, 0]) == 3.0
    finally:
        holder.release()
    assert [p.name for p in cache.root.iterdir()] == [KEY]


def test_a_damaged_entry_is_retrained_once_by_concurrent_trainers(cache):
    """Two trainers of one key at once (two drivers on one storage, or a retry): the first moves the
    damaged entry aside and trains, the second waits and then uses what the first saved."""
    import threading
    import time

    _truncate(cache.entry(KEY) / "model.pt")
    trained, used = [], []

    def trainer(value):
        mine = DenseCache(cache.root)
        with mine.training(KEY, f"trainer {value}") as needed:
            if not needed:
                used.append(float(mine.load_state(KEY)["layer.weight"][0, 0]))
                return
            time.sleep(0.3)   # training
            mine.save(KEY, _weights(value), META, locked=True)
            trained.append(value)

    threads = [threading.Thread(target=trainer, args=(float(v),)) for v in (6, 7)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(10)
    assert len(trained) == 1 and used == trained
    assert [p.name for p in cache.root.iterdir()] == [KEY]


def test_a_second_save_of_a_whole_entry_keeps_the_first(cache):
    cache.save(KEY, _weights(5.0), META)   # another process finished the same key a moment later
    assert float(cache.load_state(KEY)["layer.weight"][0, 0]) == 1.0
    assert [p.name for p in cache.root.iterdir()] == [KEY]


def test_discard_is_refused_while_another_process_holds_the_key(cache):
    _truncate(cache.entry(KEY) / "model.pt")
    holder = cache.lock(KEY, "dense csqa seed 0", refresh_every_s=None).acquire()
    try:
        with pytest.raises(UserError, match=r"dense cache entry 0123abcd is in use by .*dense csqa seed 0"):
            DenseCache(cache.root).discard(KEY)
        assert cache.exists(KEY)
        assert "checksum mismatch" in DenseCache(cache.root).discard(KEY, locked=True)   # the holder
    finally:
        holder.release()


def test_an_entry_from_before_checksums_is_checked_by_its_zip_crcs(cache):
    meta_path = cache.entry(KEY) / "meta.json"
    meta_path.write_text(json.dumps(META))   # what older smctune wrote: no sha256
    assert DenseCache(cache.root).has(KEY)
    _flip(cache.entry(KEY) / "model.pt")
    reason = DenseCache(cache.root).verify(KEY)
    assert reason and str(cache.entry(KEY) / "model.pt") in reason


class _Planted:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("form", ["raw pickle", "torch.save"])
def test_a_planted_pickle_in_model_pt_never_runs(cache, tmp_path, form):
    marker = tmp_path / "executed"
    model = cache.entry(KEY) / "model.pt"
    if form == "raw pickle":
        model.write_bytes(pickle.dumps({"layer.weight": _Planted(marker)}))
    else:
        torch.save({"layer.weight": _Planted(marker)}, model)
    # an attacker who can write the file can write its checksum too
    meta = json.loads((cache.entry(KEY) / "meta.json").read_text())
    meta["sha256"]["model.pt"] = hashlib.sha256(model.read_bytes()).hexdigest()
    (cache.entry(KEY) / "meta.json").write_text(json.dumps(meta))
    fresh = DenseCache(cache.root)
    assert fresh.has(KEY)
    with pytest.raises(DenseCacheError) as caught:
        fresh.load_state(KEY)
    message = str(caught.value)
    assert str(model) in message and "not plain tensors" in message and "\n" not in message
    assert not marker.exists()


def test_an_absent_entry_is_not_cached_and_discarding_it_touches_nothing(tmp_path):
    cache = DenseCache(tmp_path / "none")
    assert cache.verify("x").endswith("not cached") and not cache.has("x") and cache.meta("x") is None
    assert cache.discard("x") is None and not cache.root.exists()
    with pytest.raises(DenseCacheError, match="not cached"):
        cache.load_state("x")
