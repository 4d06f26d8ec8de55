"""No code runs from a run directory: a code-executing pickle planted in every file smctune reads back
(trial checkpoints, records, masks, the dense cache, the Optuna journal) runs nothing, and the reader
fails with one line naming the file, or skips it. Tune's own state under ``ray/`` is never read back
by smctune; a source scan keeps every other reader honest (no ``pickle``, ``torch.load`` only with
``weights_only=True``, ``np.load`` never with ``allow_pickle=True``)."""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from smctune.errors import UserError
from smctune.rundir.layout import RunDir

REPO = Path(__file__).resolve().parents[1]


class _Planted:
    """Unpickling this runs ``touch <marker>`` through ``os.system``: the classic payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "EXECUTED"
    yield path
    assert not path.exists(), "a planted pickle ran"


def _plant(path: Path, marker: Path, form: str = "pickle") -> Path:
    """Write the payload to ``path``: a bare pickle, or the payload inside a torch zip archive."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if form == "torch":
        torch.save({"model": _Planted(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"model": _Planted(marker)}, protocol=2))
    return path


def _one_line_naming(err: BaseException, path: Path) -> str:
    message = str(err)
    assert "\n" not in message and str(path) in message, message
    return message


# ------------------------------------------------------------------------------ trial checkpoints

def _trial(space, tmp_path, checkpoint: Path):
    from smctune.catalog import registry
    from smctune.config.specs import TrialSpec
    from smctune.train.trial import CallbackReporter, Trial

    preset = space.preset("smoke")
    spec = TrialSpec(task="csqa", method="gmp", sparsity=0.5, seed=0, preset="smoke", model=preset.model,
                     train=preset.train, tunables=space.tunables("gmp", "smoke",
                                                                 registry.method_spec("gmp").defaults()),
                     prunable={"include": [], "exclude": []}, data_dir=None,
                     cache_root=str(tmp_path / "dense_cache"))
    trial = Trial(spec, CallbackReporter(checkpoints=[str(checkpoint)]), device="cpu")
    trial.model = torch.nn.Linear(3, 2)   # _restore only needs a module to load weights into
    return trial


@pytest.mark.parametrize("form", ["pickle", "torch"])
def test_a_planted_state_pt_runs_nothing(space, tmp_path, marker, form):
    checkpoint = tmp_path / "ray" / "stage1" / "trial" / "checkpoint_000001"
    _plant(checkpoint / "state.pt", marker, form)
    with pytest.raises(Exception):
        _trial(space, tmp_path, checkpoint)._restore()


def test_a_planted_state_pt_is_refused_with_one_line_naming_it(space, tmp_path, marker):
    checkpoint = tmp_path / "checkpoint_000001"
    state = _plant(checkpoint / "state.pt", marker, "torch")
    with pytest.raises(UserError) as caught:
        _trial(space, tmp_path, checkpoint)._restore()
    _one_line_naming(caught.value, state)


@pytest.mark.parametrize("form", ["pickle", "torch"])
def test_a_planted_mask_pt_is_refused_with_one_line_naming_it(space, tmp_path, marker, form):
    from smctune.train.level import LevelState

    checkpoint = tmp_path / "checkpoint_000001"
    checkpoint.mkdir()
    torch.save({"model": torch.nn.Linear(3, 2).state_dict(), "rng": torch.get_rng_state(),
                "level": dataclasses.asdict(LevelState(round=None, target=0.5)), "optimizer": {}, "scheduler": {}},
               checkpoint / "state.pt")
    mask = _plant(checkpoint / "mask.pt", marker, form)
    with pytest.raises(UserError) as caught:
        _trial(space, tmp_path, checkpoint)._restore()
    _one_line_naming(caught.value, mask)


# ------------------------------------------------------------------------------ records and masks

def test_planted_records_are_skipped_as_unreadable(tmp_path, marker):
    from smctune.rundir.records import finished_ids, read_heartbeat, read_live, read_records

    run = RunDir(tmp_path / "run")
    _plant(run.record_file("gmp-to0.5000-seed0"), marker)
    _plant(run.live_file("gmp-to0.8000-seed0"), marker)
    _plant(run.heartbeat_file, marker)
    assert read_records(run.root) == {"gmp-to0.5000-seed0": None}
    assert read_live(run.root) == {} and read_heartbeat(run.root) is None
    assert finished_ids(run.root) == set()


def test_a_planted_sweep_json_is_refused_with_one_line_naming_it(tmp_path, marker):
    from smctune.report.load import load_run

    run = RunDir(tmp_path / "run")
    _plant(run.sweep_file, marker)
    with pytest.raises(UserError) as caught:
        load_run(run.root)
    _one_line_naming(caught.value, run.sweep_file)


@pytest.mark.parametrize("form", ["pickle", "pickle as npz", "object array in npz"])
def test_a_planted_mask_file_is_refused_with_one_line_naming_it(tmp_path, marker, form):
    from smctune.rundir.masks import load_mask, mask_path

    path = mask_path(RunDir(tmp_path / "run").masks_dir, "gmp-to0.5000-seed0", 0.5)
    if form != "pickle":   # the reader of earlier versions' files opens npz archives
        path = path.with_suffix(".npz")
    if form.startswith("pickle"):
        _plant(path, marker)
    else:   # a well-formed npz whose meta entry is a pickled object array
        path.parent.mkdir(parents=True)
        with open(path, "wb") as handle:
            np.savez(handle, meta=np.array([_Planted(marker)], dtype=object), bits0=np.zeros(1, np.uint8))
    with pytest.raises(UserError) as caught:
        load_mask(path)
    _one_line_naming(caught.value, path)


# ------------------------------------------------------------------------------ dense cache

@pytest.mark.parametrize("name", ["model.pt", "best.pt", "meta.json"])
def test_a_planted_dense_cache_file_runs_nothing_and_is_named(tmp_path, marker, name):
    from smctune.rundir.dense_cache import DenseCache, DenseCacheError

    cache = DenseCache(RunDir(tmp_path / "run").dense_cache_dir)
    weights = {"w": torch.ones(2, 2)}
    cache.save("k", weights, {"metric": "accuracy", "history": []}, best_state={"w": torch.zeros(2, 2)})
    planted = _plant(cache.entry("k") / name, marker, "torch" if name != "meta.json" else "pickle")
    if name != "meta.json":   # the attacker rewrites the checksum as well
        meta = json.loads((cache.entry("k") / "meta.json").read_text())
        meta["sha256"][name] = hashlib.sha256(planted.read_bytes()).hexdigest()
        (cache.entry("k") / "meta.json").write_text(json.dumps(meta))
    fresh = DenseCache(cache.root)
    with pytest.raises(DenseCacheError) as caught:
        fresh.load_state("k", which="best" if name == "best.pt" else "final")
    _one_line_naming(caught.value, planted)


# ------------------------------------------------------------------------------ Optuna journal

@pytest.mark.parametrize("protocol", [0, 4])
def test_a_planted_optuna_journal_is_refused_with_one_line_naming_it(tmp_path, marker, protocol):
    from smctune.sweep.cell_search import CellSearchCore
    from test_cells import decl, gmp_only

    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    # newline-terminated, so it is not taken for a torn last line and dropped
    run.optuna_journal.write_bytes(pickle.dumps(_Planted(marker), protocol=protocol) + b"\n")
    with pytest.raises(UserError) as caught:
        CellSearchCore(gmp_only(tmp_path), decl(), storage_dir=run.root)
    _one_line_naming(caught.value, run.optuna_journal)


@pytest.mark.parametrize("protocol", [0, 4])
def test_a_planted_optuna_journal_runs_nothing(tmp_path, marker, protocol):
    from smctune.sweep.cell_search import CellSearchCore
    from test_cells import decl, gmp_only

    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.optuna_journal.write_bytes(pickle.dumps(_Planted(marker), protocol=protocol) + b"\n")
    with pytest.raises(Exception):
        CellSearchCore(gmp_only(tmp_path), decl(), storage_dir=run.root)


# ------------------------------------------------------------------------------ the source scan

_UNPICKLERS = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal",
               "ray.cloudpickle"}
# a restricted Unpickler whose find_class admits plain containers and scalars only (HotProtein's
# split files); tested by trainables' own tests
_ALLOWED_UNPICKLER = {"trainables/protein/safe_pickle.py"}
_TUNE_STATE_READERS = {"ExperimentAnalysis", "can_restore", "restore_from_dir"}


def _sources():
    for root in ("smctune", "trainables"):
        for path in sorted((REPO / root).rglob("*.py")):
            yield path.relative_to(REPO).as_posix(), ast.parse(path.read_text(), str(path))


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else "dynamic"
    return None


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def test_no_module_unpickles_what_it_reads():
    problems = []
    for name, tree in _sources():
        for node in ast.walk(tree):
            where = f"{name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in _UNPICKLERS and name not in _ALLOWED_UNPICKLER:
                        problems.append(f"{where}: import {alias.name}")
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if module in _UNPICKLERS and name not in _ALLOWED_UNPICKLER:
                    problems.append(f"{where}: from {module} import ...")
                if module == "torch" and any(a.name == "load" for a in node.names):
                    problems.append(f"{where}: from torch import load")
                if module == "ray" and any(a.name == "cloudpickle" for a in node.names):
                    problems.append(f"{where}: from ray import cloudpickle")
            elif isinstance(node, ast.Call):
                called = _dotted(node.func)
                if called in ("torch.load", "torch.serialization.load") and \
                        _keyword(node, "weights_only") is not True:
                    problems.append(f"{where}: {called} without weights_only=True")
                if called.split(".")[-1] == "load" and called.split(".")[0] in ("np", "numpy") and \
                        _keyword(node, "allow_pickle") not in (None, False):
                    problems.append(f"{where}: {called} with allow_pickle")
                if called in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load",
                              "pd.read_pickle", "pandas.read_pickle", "torch.jit.load"):
                    problems.append(f"{where}: {called}")
                if called.split(".")[-1] in _TUNE_STATE_READERS or called.endswith("Tuner.restore"):
                    problems.append(f"{where}: {called} reads Tune's pickled state")
    assert not problems, "\n".join(problems)


def test_the_allowed_unpickler_admits_named_globals_only():
    source = (REPO / "trainables/protein/safe_pickle.py").read_text()
    assert "def find_class" in source and "pickle.Unpickler" in source
