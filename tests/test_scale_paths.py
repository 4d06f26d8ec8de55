"""Driver paths that must stay linear in trials (issue 20): each test counts the work (record reads,
cells visited, priority comparisons, mask reads, pair computations), never the time, on sizes where
the quadratic versions did many times more of it.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import pytest

from smctune.config.search_space import load_search_space
from smctune.config.specs import SweepSpec, TrialSpec, trial_id_from
from smctune.rundir.records import FinishedTrials
from smctune.sweep import cell_search, trial_order
from smctune.sweep.cell_search import FINISHED, CellSearchCore
from smctune.sweep.plan import plan_trials
from smctune.sweep.simulated_stage import SimulatedStageRunner

from test_cells import decl


class Counter:
    def __init__(self):
        self.calls = 0

    def wrap(self, function):
        def counted(*args, **kwargs):
            self.calls += 1
            return function(*args, **kwargs)
        return counted


# ---------------------------------------------------------------------------------- trial ids

def test_trial_ids_are_computed_once_and_without_asdict(tmp_path, monkeypatch):
    sweep = SweepSpec(task="csqa", methods=("omp_before", "gmp", "lth"), sparsities=(0.2, 0.5, 0.8),
                      seeds=tuple(range(20)), preset="smoke", preset_reason="test", name="t",
                      run_dir=str(tmp_path / "run"), mlflow_uri="")
    specs = plan_trials(sweep, load_search_space("csqa"))
    expected = [trial_id_from(spec.to_dict()) for spec in specs]
    asdict = Counter()
    monkeypatch.setattr(dataclasses, "asdict", asdict.wrap(dataclasses.asdict))
    for _ in range(6):   # the driver asks several times per trial
        assert [spec.trial_id for spec in specs] == expected
    assert asdict.calls == 0
    # a changed spec gets its own id, not the cached one of the spec it came from
    assert dataclasses.replace(specs[1], seed=99).trial_id == expected[1].replace("seed0", "seed99")


# ---------------------------------------------------------------------------------- threshold bookkeeping

def SimulatedRunner(run_dir, sweep):
    return SimulatedStageRunner(run_dir, sweep, value=lambda spec: 0.6 - 0.5 * max(0.0, (spec.sparsity or 0.0) - 0.5))


class Printer:
    def message(self, text, level=1):
        pass


def test_threshold_bookkeeping_reads_each_record_a_bounded_number_of_times(tmp_path, monkeypatch):
    from smctune.sweep.threshold_stage import threshold_stage

    grid = tuple(round(1 - 0.8 ** k, 4) for k in range(1, 11))
    sweep = SweepSpec(task="csqa", methods=("dense", "omp_before", "gmp"), sparsities=grid,
                      seeds=tuple(range(30)), preset="smoke", preset_reason="test", name="t",
                      run_dir=str(tmp_path / "run"), mlflow_uri="", search="threshold")
    run_dir = pathlib.Path(sweep.run_dir)
    (run_dir / "results").mkdir(parents=True)
    (run_dir / "sweep.json").write_text(sweep.to_json())
    batch = plan_trials(sweep, load_search_space("csqa"))
    reads = Counter()
    original = pathlib.Path.read_bytes   # how records are read (records.py, report/load.py)

    def counted_read(path, *args, **kwargs):
        if path.parent.name == "results":
            reads.calls += 1
        return original(path, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_bytes", counted_read)
    first = SimulatedRunner(run_dir, sweep)
    threshold_stage(first, 1, batch, Printer())
    records = len(list((run_dir / "results").glob("*.json")))
    assert first.trained == records > 30      # 30 dense baselines + the searched levels
    dense = 30
    assert records <= reads.calls <= records + dense   # each record once after it was written; the
                                                      # dense means read only the dense baselines again

    # a resumed sweep: every record exists; the old bookkeeping read all of them once per fixed
    # trial (30 dense baselines here: 30 x records reads)
    reads.calls = 0
    again = SimulatedRunner(run_dir, sweep)
    threshold_stage(again, 1, batch, Printer())
    assert again.trained == 0
    assert records <= reads.calls <= records + dense
    assert json.loads((run_dir / "threshold.json").read_text())["stage1"]["curves"]


def test_finished_trials_follow_new_records_and_reruns(tmp_path):
    sweep = SweepSpec(task="csqa", methods=("omp_before",), sparsities=(0.5,), seeds=(0, 1),
                      preset="smoke", preset_reason="test", name="t", run_dir=str(tmp_path / "run"),
                      mlflow_uri="")
    runner = SimulatedRunner(tmp_path / "run", sweep)
    specs = [s for s in plan_trials(sweep, load_search_space("csqa")) if s.method == "omp_before"]
    assert runner.done("best") == {}
    runner.run("a", specs[:1], specs[:1])
    assert runner.done("best") == {specs[0].trial_id: 0.6}
    runner.keeper.started(specs[0])        # rerun, and this time it fails
    runner.keeper.finished(specs[0].trial_id, "failed", "boom")
    runner.run("b", specs[1:], specs[1:])
    assert runner.done("best") == {specs[1].trial_id: 0.6}
    assert FinishedTrials(tmp_path / "run", runner.keeper, also=("failed",)).values("best") == \
        {specs[0].trial_id: None, specs[1].trial_id: 0.6}


# ---------------------------------------------------------------------------------- the cell searcher

def many_cells(tmp_path, cells: int) -> list:
    """``cells`` untuned cells of one member each (3 methods, distinct levels), as trial dicts."""
    sweep = SweepSpec(task="csqa", methods=("omp_before", "gmp", "snip"), sparsities=(0.5,), seeds=(0,),
                      preset="smoke", preset_reason="test", name="t", run_dir=str(tmp_path / "run"),
                      mlflow_uri="")
    templates = [s.to_dict() for s in plan_trials(sweep, load_search_space("csqa")) if s.sparsity]
    out = []
    for index in range(cells):
        trial = dict(templates[index % len(templates)])
        trial["sparsity"] = round(0.1 + 0.8 * index / cells, 6) + 1e-7 * (index % len(templates))
        out.append(trial)
    return out


def test_suggest_visits_each_cell_a_bounded_number_of_times_on_10k_cells(tmp_path, monkeypatch):
    trials = many_cells(tmp_path, 10_000)
    searcher = CellSearchCore(trials, decl(trials_per_cell=1), storage_dir=tmp_path / "run")
    visits, priorities, suggests = Counter(), Counter(), Counter()
    monkeypatch.setattr(searcher, "_take", visits.wrap(searcher._take))
    monkeypatch.setattr(searcher, "suggest", suggests.wrap(searcher.suggest))
    monkeypatch.setattr(trial_order.TrialLengths, "priority", priorities.wrap(trial_order.TrialLengths.priority))
    emitted, running = 0, []
    while True:   # 4 slots; a trial completes whenever the slots are full
        config = searcher.suggest(f"t{emitted}")
        if config == FINISHED:
            break
        if config is None or len(running) == 4:
            searcher.on_trial_complete(running.pop(0), {"best": 0.5, "level_done": True, "time_total_s": 1.0})
        if config is not None:
            running.append(f"t{emitted}")
            emitted += 1
    assert emitted == 10_000
    assert visits.calls <= 2 * emitted + 3            # each cell: once to give, once found empty
    assert priorities.calls <= 3 * suggests.calls     # the 3 (method, work) groups, not 10k cells
    assert cell_search.FINISHED == FINISHED


def test_trial_lengths_median_is_exact_and_incremental():
    lengths = trial_order.TrialLengths()
    values = np.random.default_rng(0).exponential(size=501)
    for i, seconds in enumerate(values, start=1):
        lengths.observe("gmp", 1.0, float(seconds))
        if i in (1, 2, 3, 100, 501):
            assert lengths.rate("gmp") == pytest.approx(float(np.median(values[:i])))


# ---------------------------------------------------------------------------------- mask overlap

def _bool_masks(rng, shapes, density):
    return {name: rng.random(shape) < density for name, shape in shapes.items()}


def test_packed_jaccard_equals_the_bool_definition():
    from smctune.report.similarity import packed_jaccard
    from smctune.rundir.packed_mask import PackedMask

    rng = np.random.default_rng(1)
    shapes = {"a": (7, 13), "b": (3,), "c": (64, 9)}      # sizes that are not multiples of 8
    for _ in range(20):
        x, y = _bool_masks(rng, shapes, rng.random()), _bool_masks(rng, shapes, rng.random())
        both = sum(int(np.count_nonzero(x[n] & y[n])) for n in shapes)
        either = sum(int(np.count_nonzero(x[n] | y[n])) for n in shapes)
        expected = both / either if either else None
        a, b = PackedMask.of(x), PackedMask.of(y)
        assert a.layout == b.layout and packed_jaccard(a, b) == expected      # the one-pass path
        a_split = PackedMask(a.shapes, a.bits)                                 # per tensor (format 1)
        assert packed_jaccard(a_split, b) == expected
        # a tensor only one mask has is left out of the overlap
        extra = PackedMask.of({**x, "d": rng.random(11) > 0.5})
        assert extra.layout != b.layout and packed_jaccard(extra, b) == expected


def test_report_reads_each_mask_once_and_a_second_report_computes_no_pair(tmp_path, monkeypatch):
    from smctune.report import similarity
    from smctune.report.load import load_run
    from smctune.rundir import masks as mask_io

    sweep = SweepSpec(task="csqa", methods=("omp_before", "gmp", "snip", "omp_after"),
                      sparsities=(0.5, 0.8), seeds=(0, 1, 2), preset="smoke", preset_reason="test",
                      name="t", run_dir=str(tmp_path / "run"), mlflow_uri="")
    run_dir = pathlib.Path(sweep.run_dir)
    (run_dir / "results").mkdir(parents=True)
    (run_dir / "sweep.json").write_text(sweep.to_json())
    specs = plan_trials(sweep, load_search_space("csqa"))
    rng = np.random.default_rng(2)
    shapes = {"encoder.layer.0.weight": (32, 48), "encoder.layer.1.weight": (48, 32)}
    SimulatedStageRunner(run_dir, sweep, mask_shapes=shapes).run("s", specs, specs)
    loads = Counter()
    monkeypatch.setattr(similarity, "load_packed", loads.wrap(mask_io.load_packed))
    first = similarity.pair_similarities(load_run(run_dir))
    masks = len(list((run_dir / "masks").glob("*.mask")))
    assert masks == 4 * 2 * 3
    assert loads.calls == masks                          # each file once
    assert all(p.n_jaccard == 3 for p in first) and len(first) == 2 * 6
    loads.calls = 0
    second = similarity.pair_similarities(load_run(run_dir))
    assert loads.calls == 0                              # every pair from the cache
    assert second == first
    # a rewritten mask (a retried trial) is compared again; only its pairs
    spec = next(s for s in specs if s.method == "gmp" and s.sparsity == 0.5 and s.seed == 0)
    mask_io.save_mask(run_dir / "masks", spec.trial_id, 0.5, _bool_masks(rng, shapes, 0.5))
    third = similarity.pair_similarities(load_run(run_dir))
    assert loads.calls == 4                              # it and the 3 it pairs with (seed 0, level 0.5)
    assert [p.jaccard for p in third] != [p.jaccard for p in first]
    # a damaged cache is a miss, not an error
    (run_dir / "similarity_cache.json").write_text("{not json")
    assert similarity.pair_similarities(load_run(run_dir)) == third


@pytest.mark.parametrize("form", ["v2 wrong size", "v2 wrong offsets", "v1 wrong size"])
def test_an_earlier_format_mask_with_the_wrong_number_of_bytes_is_refused(tmp_path, form):
    from smctune.errors import UserError
    from smctune.rundir import masks as mask_io
    from smctune.rundir import masks_npz

    meta = {"trial_id": "t", "level": 0.5, "sparsity": 0.0, "names": ["w", "v"], "shapes": [[40, 40], [8]]}
    entries = {
        "v2 wrong size": dict(bits=np.zeros(2, dtype=np.uint8), format=masks_npz.FORMAT_V2, offsets=[0, 200]),
        "v2 wrong offsets": dict(bits=np.zeros(201, dtype=np.uint8), format=masks_npz.FORMAT_V2, offsets=[1, 0]),
        "v1 wrong size": dict(bits0=np.zeros(2, dtype=np.uint8), bits1=np.zeros(1, dtype=np.uint8),
                              format=masks_npz.FORMAT_V1),
    }[form]
    meta.update(format=entries.pop("format"), offsets=entries.pop("offsets", None))
    path = tmp_path / "t-s0.5000-seed0@0.5000.npz"
    with open(path, "wb") as handle:
        np.savez(handle, **entries, meta=np.array(json.dumps(meta)))
    with pytest.raises(UserError, match="not a smctune mask file"):
        mask_io.load_packed(path)


def test_masks_of_earlier_formats_still_load(tmp_path):
    """Formats 1 (an npz entry per tensor) and 2 (one npz entry for all) read to the same masks as
    the current format."""
    from smctune.rundir import masks as mask_io
    from smctune.rundir import masks_npz

    rng = np.random.default_rng(0)
    masks = {"a.weight": rng.random((5, 7)) > 0.5, "b.weight": rng.random(13) > 0.3}
    pieces = [np.packbits(m.ravel()) for m in masks.values()]
    meta = {"trial_id": "t", "level": 0.5, "sparsity": 0.5,
            "names": list(masks), "shapes": [list(m.shape) for m in masks.values()]}
    v1, v2 = tmp_path / "v1@0.5000.npz", tmp_path / "v2@0.5000.npz"
    with open(v1, "wb") as handle:
        np.savez_compressed(handle, bits0=pieces[0], bits1=pieces[1],
                            meta=np.array(json.dumps({**meta, "format": masks_npz.FORMAT_V1})))
    with open(v2, "wb") as handle:
        np.savez_compressed(handle, bits=np.concatenate(pieces), meta=np.array(json.dumps(
            {**meta, "format": masks_npz.FORMAT_V2, "offsets": [0, pieces[0].size]})))
    new = mask_io.save_mask(tmp_path, "t-s0.5000-seed0", 0.5, masks)
    assert new.suffix == ".mask" and mask_io.read_header(new)["format"] == mask_io.FORMAT
    for path in (v1, v2, new):
        loaded = mask_io.load_mask(path)
        assert list(loaded) == list(masks)
        for name, mask in masks.items():
            assert loaded[name].shape == mask.shape and (loaded[name] == mask).all()


def test_trial_spec_is_still_a_plain_frozen_dataclass():
    fields = {f.name for f in dataclasses.fields(TrialSpec)}
    assert "trial_id" not in fields
