"""Mask files: exact round trips, packed sizes, atomic overwrite, discovery, and a real trial's file."""
from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pytest

from smctune.catalog import registry
from smctune.config.specs import SweepSpec, TrialSpec
from smctune.errors import UserError
from smctune.rundir import masks as mask_io
from smctune.rundir.masks import load_mask, mask_files, mask_path, read_header, save_mask


def _write(path, header: dict, bits: bytes, compress=True) -> None:
    """A file in the current format with any header and payload (to build damaged ones)."""
    raw = json.dumps(header).encode()
    path.write_bytes(mask_io.MAGIC + len(raw).to_bytes(4, "little") + raw + (zlib.compress(bits) if compress else bits))


def _odd_masks() -> dict:
    rng = np.random.default_rng(0)
    return {"enc.w": rng.random((3, 5, 7)) < 0.3, "enc.b": rng.random(13) < 0.5,
            "scalar": np.array(True), "empty": np.zeros((0, 4), dtype=bool),
            "thin": rng.random((1, 1, 9)) < 0.7, "all_kept": np.ones(17, dtype=bool),
            "all_pruned": np.zeros((2, 3), dtype=bool)}


def test_round_trip_is_exact_for_odd_shapes_and_uniform_masks(tmp_path):
    masks = _odd_masks()
    path = save_mask(tmp_path, "omp_after-s0.3600-seed0", 0.36, masks)
    assert path == tmp_path / "omp_after-s0.3600-seed0@0.3600.mask"
    loaded = load_mask(path)
    assert list(loaded) == list(masks)  # order kept
    for name, mask in masks.items():
        assert loaded[name].dtype == np.bool_ and loaded[name].shape == mask.shape, name
        assert np.array_equal(loaded[name], mask), name


def test_masks_are_bit_packed_and_the_header_says_what_the_file_is(tmp_path):
    masks = _odd_masks()
    path = save_mask(tmp_path, "gmp-s0.4880-seed1", 0.488, masks)
    data = path.read_bytes()
    assert data.startswith(b"smctune-mask\n")
    header_end = len(mask_io.MAGIC) + 4 + int.from_bytes(data[len(mask_io.MAGIC):len(mask_io.MAGIC) + 4], "little")
    meta = json.loads(data[len(mask_io.MAGIC) + 4:header_end])
    assert meta == read_header(path) and meta["format"] == "smctune.masks/3"
    bits = zlib.decompress(data[header_end:])   # one zlib stream of every tensor's packed bits
    ends = meta["offsets"][1:] + [len(bits)]
    sizes = [end - start for start, end in zip(meta["offsets"], ends)]
    assert sizes == [math.ceil(mask.size / 8) for mask in masks.values()]  # 105 bits -> 14 bytes, ...
    assert sizes[:2] == [14, 2] and meta["offsets"][0] == 0
    assert bits[:14] == np.packbits(masks["enc.w"].ravel()).tobytes()
    total = sum(mask.size for mask in masks.values())
    kept = sum(int(mask.sum()) for mask in masks.values())
    assert meta["trial_id"] == "gmp-s0.4880-seed1" and meta["level"] == 0.488
    assert meta["sparsity"] == (total - kept) / total
    assert meta["names"] == list(masks) and meta["shapes"][0] == [3, 5, 7]


def test_torch_masks_keep_the_canonical_names_of_tied_tensors(tmp_path):
    import torch

    from smctune.pruning import prune
    from toy_models import TiedLM

    torch.manual_seed(0)
    mask = prune(TiedLM(), "magnitude", 0.5)
    loaded = load_mask(save_mask(tmp_path, "t", 0.5, mask))
    assert list(loaded) == [stat.name for stat in mask.layerwise()] == ["embed.weight", "body.weight"]
    for stat in mask.layerwise():
        assert int(loaded[stat.name].sum()) == stat.kept
        assert np.array_equal(loaded[stat.name], mask[stat.name].numpy())


def test_a_retried_trial_overwrites_its_file_and_a_failed_write_leaves_the_old_one(tmp_path, monkeypatch):
    first = {"w": np.array([True, False, True])}
    second = {"w": np.array([False, False, True])}
    path = save_mask(tmp_path, "snip-s0.2000-seed0", 0.2, first)
    assert save_mask(tmp_path, "snip-s0.2000-seed0", 0.2, second) == path
    assert np.array_equal(load_mask(path)["w"], second["w"])

    def crash(data, level=-1):
        raise KeyboardInterrupt   # after the header is written: half a file in the staging path

    monkeypatch.setattr(mask_io.zlib, "compress", crash)
    with pytest.raises(KeyboardInterrupt):
        save_mask(tmp_path, "snip-s0.2000-seed0", 0.2, first)
    assert np.array_equal(load_mask(path)["w"], second["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no staging file left behind


def test_mask_files_keys_by_trial_and_rounded_level(tmp_path):
    assert mask_files(tmp_path) == {}  # no masks/ directory: a run from before masks were saved
    masks_dir = tmp_path / "masks"
    wanted = {("lth-to0.4880-seed0", 0.2): 0.2, ("lth-to0.4880-seed0", 0.36): 0.36,
              ("lth-to0.4880-seed0", 0.488): 0.488, ("omp_before-s0.6723-seed1", 0.6723): 0.67232}
    for (trial_id, _), level in wanted.items():
        save_mask(masks_dir, trial_id, level, {"w": np.ones(3, dtype=bool)})
    (masks_dir / "notes.txt").write_text("x")
    (masks_dir / "no-level.mask").write_bytes(b"")
    (masks_dir / "x@level.npz").write_bytes(b"")
    # a run written by an earlier version: its .npz files are found, unless a level has a new file too
    (masks_dir / "old-s0.2000-seed0@0.2000.npz").write_bytes(b"")
    (masks_dir / "lth-to0.4880-seed0@0.2000.npz").write_bytes(b"")
    found = mask_files(tmp_path)
    assert found == {**{key: mask_path(masks_dir, key[0], level) for key, level in wanted.items()},
                     ("old-s0.2000-seed0", 0.2): masks_dir / "old-s0.2000-seed0@0.2000.npz"}


def test_bad_input_and_bad_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="'w' must be boolean"):
        save_mask(tmp_path, "t", 0.5, {"w": np.ones(3)})
    with pytest.raises(UserError, match="not found"):
        load_mask(tmp_path / "missing@0.5000.mask")
    good = save_mask(tmp_path, "good", 0.5, {"a": np.ones((3, 5), bool), "b": np.zeros(9, bool)})
    header = read_header(good)
    bits = np.packbits(np.ones(15, bool)).tobytes() + np.packbits(np.zeros(9, bool)).tobytes()
    damaged = {
        "garbage": lambda p: p.write_bytes(b"not a mask"),
        "a zip": lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00" * 40),
        "truncated header": lambda p: p.write_bytes(good.read_bytes()[:30]),
        "other format": lambda p: _write(p, {**header, "format": "something else"}, bits),
        "not json": lambda p: p.write_bytes(mask_io.MAGIC + (3).to_bytes(4, "little") + b"{x}"),
        "negative shape": lambda p: _write(p, {**header, "shapes": [[3, -5], [9]]}, bits),
        "names and shapes": lambda p: _write(p, {**header, "names": ["a"]}, bits),
        # bytes or offsets that do not fit the shapes are refused, not sliced short
        "short": lambda p: _write(p, header, bits[:-1]),
        "long": lambda p: _write(p, header, bits + b"\x00"),
        "shifted": lambda p: _write(p, {**header, "offsets": [0, 1]}, bits),
        "trailing bytes": lambda p: p.write_bytes(good.read_bytes() + b"x"),
        "not zlib": lambda p: _write(p, header, bits, compress=False),
        # a stream that would inflate to 64 MB is stopped one byte past what the shapes need
        "inflation bomb": lambda p: _write(p, header, bytes(64 << 20)),
    }
    for name, damage in damaged.items():
        path = tmp_path / f"{name.replace(' ', '_')}@0.5000.mask"
        damage(path)
        with pytest.raises(UserError, match="not a smctune mask file") as caught:
            load_mask(path)
        assert "\n" not in str(caught.value) and str(path) in str(caught.value), name


# --------------------------------------------------------------------------------------------------
# the sweep and a real trial

def test_every_planned_trial_saves_into_the_run_directory(space, tmp_path):
    from smctune.sweep.plan import plan_trials

    run_dir = tmp_path / "runs" / "x"
    spec = SweepSpec(task="csqa", methods=("omp_before", "lth"), sparsities=(0.2, 0.36), seeds=(0,),
                     preset="smoke", preset_reason="test", name="x", run_dir=str(run_dir),
                     mlflow_uri="sqlite:////tmp/x.db")
    trials = plan_trials(spec, space)
    assert trials and {t.masks_dir for t in trials} == {str(run_dir / "masks")}


def test_a_trial_saves_the_mask_its_record_describes(space, tmp_path):
    from smctune.pruning import num_pruned
    from smctune.rundir.records import layer_summary
    from smctune.train.trial import CallbackReporter, Trial

    preset = space.preset("smoke")
    spec = TrialSpec(task="csqa", method="omp_before", sparsity=0.36, seed=0, preset="smoke",
                     model=preset.model, train=preset.train,
                     tunables=space.tunables("omp_before", "smoke",
                                             registry.method_spec("omp_before").defaults()),
                     prunable={"include": [], "exclude": []}, data_dir=None,
                     cache_root=str(tmp_path / "cache"), masks_dir=str(tmp_path / "run" / "masks"))
    reporter = CallbackReporter()
    Trial(spec, reporter, device="cpu").run()
    files = mask_files(tmp_path / "run")
    assert list(files) == [(spec.trial_id, 0.36)]
    saved = load_mask(files[(spec.trial_id, 0.36)])

    last = reporter.reports[-1]
    assert last["level_done"] and last["level"] == 0.36
    layers = layer_summary(last["layerwise"])["layers"]
    assert list(saved) == list(layers) == [name for name, _, _ in last["layerwise"]]
    for name, numel, kept in last["layerwise"]:
        assert saved[name].size == numel and int(saved[name].sum()) == kept, name
        assert round((numel - kept) / numel, 6) == layers[name], name
    total = sum(mask.size for mask in saved.values())
    pruned = total - sum(int(mask.sum()) for mask in saved.values())
    assert pruned == num_pruned(total, 0.36)  # exactly the target, by the one rounding rule
    assert read_header(files[(spec.trial_id, 0.36)])["sparsity"] == last["sparsity"] == pruned / total


def test_an_imp_trial_saves_one_file_per_round(space, tmp_path):
    from smctune.train.trial import CallbackReporter, Trial

    preset = space.preset("smoke")

    def spec(method, sparsity, levels=()):
        return TrialSpec(task="csqa", method=method, sparsity=sparsity, seed=0, preset="smoke",
                         model=preset.model, train=preset.train,
                         tunables=space.tunables(method, "smoke", registry.method_spec(method).defaults()),
                         prunable={"include": [], "exclude": []}, data_dir=None,
                         cache_root=str(tmp_path / "cache"), levels=levels,
                         masks_dir=str(tmp_path / "run" / "masks"))

    Trial(spec("dense", None), CallbackReporter(), device="cpu").run()
    assert mask_files(tmp_path / "run") == {}  # dense has no mask
    lth = spec("lth", 0.36, levels=(0.2, 0.36))
    reporter = CallbackReporter()
    Trial(lth, reporter, device="cpu").run()
    files = mask_files(tmp_path / "run")
    assert sorted(files) == [(lth.trial_id, 0.2), (lth.trial_id, 0.36)]
    for report in (r for r in reporter.reports if r["level_done"]):
        saved = load_mask(files[(lth.trial_id, round(report["level"], 4))])
        assert [[name, mask.size, int(mask.sum())] for name, mask in saved.items()] == report["layerwise"]
    first, second = (load_mask(files[(lth.trial_id, level)]) for level in (0.2, 0.36))
    assert all(not (second[name] & ~first[name]).any() for name in first)  # IMP only removes weights
