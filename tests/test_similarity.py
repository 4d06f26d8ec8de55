"""Mask overlap, layer-allocation correlation and embedding collapse; expectations computed by hand."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from smctune.report.load import load_run
from smctune.config.specs import SweepSpec
from smctune.errors import UserError
from smctune.rundir.masks import save_mask
from smctune.report.similarity import PairSimilarity, embedding_collapse, embedding_flags, jaccard, layer_correlation, layer_profiles, pair_similarities


def _bools(*values) -> np.ndarray:
    return np.array(values, dtype=bool)


# --------------------------------------------------------------------------------------------------
# jaccard

def test_jaccard_of_kept_weights():
    a = {"w": _bools(1, 1, 1, 0, 0)}   # kept {0, 1, 2}
    b = {"w": _bools(0, 1, 1, 1, 0)}   # kept {1, 2, 3}
    assert jaccard(a, b) == 2 / 4
    assert jaccard(a, a) == 1.0
    assert jaccard(a, {"w": _bools(0, 0, 0, 1, 1)}) == 0.0


def test_jaccard_pools_the_common_tensors_and_ignores_the_others():
    a = {"x": _bools(1, 1, 0, 0), "y": _bools(1, 0, 0, 0).reshape(2, 2), "only_a": _bools(1, 1)}
    b = {"y": _bools(1, 1, 0, 0).reshape(2, 2), "x": _bools(0, 1, 1, 0), "only_b": _bools(0)}
    # x: 1 both / 3 either; y: 1 both / 2 either -> 2 / 5 (pooled, not the mean of 1/3 and 1/2)
    assert jaccard(a, b) == pytest.approx(2 / 5)


def test_jaccard_is_undefined_without_common_tensors_or_kept_weights():
    assert jaccard({"x": _bools(1)}, {"y": _bools(1)}) is None
    assert jaccard({"x": _bools(0, 0)}, {"x": _bools(0, 0)}) is None
    with pytest.raises(UserError, match="differ in shape"):
        jaccard({"x": _bools(1, 0)}, {"x": _bools(1, 0, 1)})


# --------------------------------------------------------------------------------------------------
# layer correlation

def test_layer_correlation_is_pearson_over_the_common_layers():
    a = {"l1": 0.1, "l2": 0.2, "l3": 0.6}
    b = {"l3": 0.7, "l1": 0.3, "extra": 0.9, "l2": 0.2}
    # x - mean: -.2 -.1 .3; y - mean: -.1 -.2 .3 -> sxy .13, sxx .14, syy .14
    assert layer_correlation(a, b) == pytest.approx(0.13 / 0.14)
    assert layer_correlation(b, a) == pytest.approx(0.13 / 0.14)
    assert layer_correlation({"p": 0.0, "q": 1.0}, {"p": 1.0, "q": 0.0}) == pytest.approx(-1.0)


def test_layer_correlation_is_undefined_for_constant_or_too_few_layers():
    assert layer_correlation({"l1": 0.5, "l2": 0.5}, {"l1": 0.1, "l2": 0.9}) is None
    assert layer_correlation({"l1": 0.1, "l2": 0.9}, {"l1": 0.36, "l2": 0.36}) is None
    assert layer_correlation({"l1": 0.1, "l2": 0.9}, {"l1": 0.3, "l3": 0.9}) is None
    assert layer_correlation({}, {}) is None


# --------------------------------------------------------------------------------------------------
# embedding collapse

def test_an_emptied_embedding_matrix_is_flagged_by_name():
    reason = embedding_collapse({"roberta.embeddings.word_embeddings.weight": 0.995,
                                 "layer.0.query.weight": 0.9, "layer.0.key.weight": 0.9})
    assert reason is not None and "\n" not in reason
    assert "roberta.embeddings.word_embeddings.weight 99.5%" in reason
    assert embedding_collapse({"embed.weight": 0.99, "body.weight": 0.99}) is not None  # exactly 99 %


def test_embeddings_much_sparser_than_the_rest_are_flagged():
    reason = embedding_collapse({"Embed_tokens.weight": 0.8, "embed_positions.weight": 0.75,
                                 "l1.weight": 0.4, "l2.weight": 0.5})  # 0.80 and 0.75 vs 0.45
    assert reason is not None and "Embed_tokens.weight 80.0%, embed_positions.weight 75.0%" in reason
    assert "45.0%" in reason and "other 2 layers" in reason
    assert "99%" not in reason  # not emptied, only sparser
    # SNIP's shape: the token embedding singled out, small embeddings untouched; a mean over the
    # embeddings (0.43 - 0 < 0.30) would miss it
    snip = embedding_collapse({"word_embeddings.weight": 0.86, "position_embeddings.weight": 0.0,
                               "token_type_embeddings.weight": 0.0, "l0.q.weight": 0.0, "l0.k.weight": 0.0})
    assert snip is not None and "word_embeddings.weight 86.0%" in snip and "position" not in snip


def test_embedding_collapse_negatives():
    assert embedding_collapse({"embed.weight": 0.74, "l1.weight": 0.45}) is None   # gap 0.29
    assert embedding_collapse({"embed.weight": 0.2, "l1.weight": 0.9}) is None     # denser
    assert embedding_collapse({"l1.weight": 1.0, "l2.weight": 0.1}) is None        # no embedding
    assert embedding_collapse({"embed.weight": 1.0}) is None                       # nothing to compare
    assert embedding_collapse({}) is None


# --------------------------------------------------------------------------------------------------
# a synthetic run: three tensors, two seeds, grid (0.2, 0.36)

GRID = (0.2, 0.36)
E, A, B = "embeddings.weight", "a.weight", "b.weight"


def _mask(e, a, b) -> dict:
    return {E: _bools(*e), A: _bools(*a), B: _bools(*b)}


def _layers(mask: dict) -> dict:
    return {name: round(1 - kept.sum() / kept.size, 6) for name, kept in mask.items()}


def _make_run(root: Path) -> Path:
    (root / "results").mkdir(parents=True)
    spec = SweepSpec(task="csqa", methods=("snip", "dense", "gmp", "omp_after"), sparsities=GRID,
                     seeds=(0, 1), preset="smoke", preset_reason="test", name="sim", run_dir=str(root),
                     mlflow_uri="file:///nowhere")
    (root / "sweep.json").write_text(spec.to_json())
    return root


def _add(root: Path, method, seed, levels, status="ok", tuning=0, masks=None) -> str:
    """One record; ``levels`` are (sparsity, layers) and ``masks`` (sparsity -> mask) become files."""
    label = f"to{levels[-1][0]:.4f}" if method == "lth" else f"s{levels[0][0]:.4f}" if levels else "s0.3600"
    trial_id = f"{method}-{label}-seed{seed}" + (f"-t{tuning}" if tuning else "")
    data = {"trial_id": trial_id, "task": "csqa", "method": method, "seed": seed, "preset": "smoke",
            "status": status, "error": None, "metric": "accuracy", "chance": 0.2, "tuning": tuning,
            "levels": [{"sparsity": s, "achieved_sparsity": s, "best": 0.5, "final": 0.5,
                        **({"layers": layers} if layers is not None else {})} for s, layers in levels]}
    (root / "results" / f"{trial_id}.json").write_text(json.dumps(data))
    for sparsity, mask in (masks or {}).items():
        save_mask(root / "masks", trial_id, sparsity, mask)
    return trial_id


def _add_masked(root: Path, method, seed, sparsity, mask, status="ok", tuning=0) -> str:
    return _add(root, method, seed, [(sparsity, _layers(mask))], status, tuning, {sparsity: mask})


@pytest.fixture
def run(tmp_path):
    root = _make_run(tmp_path / "run")
    # 0.2, seed 0: gmp and omp_after nearly agree, snip empties half the embedding instead
    _add_masked(root, "omp_after", 0, 0.2, _mask((1, 1, 1, 1), (0, 1, 1, 1), (1, 0)))
    _add_masked(root, "gmp", 0, 0.2, _mask((1, 1, 1, 1), (1, 0, 1, 1), (1, 0)))
    _add_masked(root, "snip", 0, 0.2, _mask((0, 0, 1, 1), (1, 1, 1, 1), (1, 1)))
    # 0.2, seed 1: gmp (collapsed: still a measurement) = omp_after; snip has a record but no mask
    _add_masked(root, "omp_after", 1, 0.2, _mask((1, 1, 1, 1), (1, 1, 0, 1), (0, 1)))
    _add_masked(root, "gmp", 1, 0.2, _mask((1, 1, 1, 1), (1, 1, 0, 1), (0, 1)), status="collapsed")
    _add(root, "snip", 1, [(0.2, {E: 0.75, A: 0.0, B: 0.5})])
    # 0.36: only seed 0 has both methods; snip failed; second tunings must not count
    _add_masked(root, "omp_after", 0, 0.36, _mask((1, 1, 1, 0), (0, 1, 1, 1), (1, 0)))
    _add_masked(root, "gmp", 0, 0.36, _mask((1, 1, 1, 1), (0, 0, 1, 1), (1, 0)))
    _add_masked(root, "gmp", 1, 0.36, _mask((0, 1, 1, 1), (0, 1, 1, 1), (0, 1)))
    _add_masked(root, "gmp", 0, 0.36, _mask((0, 0, 0, 0), (1, 1, 1, 1), (1, 1)), tuning=1)
    _add(root, "snip", 0, [], status="failed")
    _add_masked(root, "snip", 0, 0.36, _mask((0, 0, 0, 1), (1, 1, 1, 1), (1, 1)), tuning=1)
    # not compared: dense (no mask), LTH (not among the sweep's methods; its 0.488 round is off the grid)
    _add(root, "dense", 0, [(0.0, None)])
    _add(root, "lth", 0, [(0.2, {E: 0.1, A: 0.3, B: 0.2}), (0.488, {E: 0.5, A: 0.5, B: 0.5})])
    return load_run(root)


def test_layer_profiles_average_the_seeds_on_the_grid(run):
    profiles = layer_profiles(run)
    assert set(profiles) == {("omp_after", 0.2), ("gmp", 0.2), ("snip", 0.2), ("omp_after", 0.36),
                             ("gmp", 0.36), ("lth", 0.2)}
    assert profiles[("snip", 0.2)] == pytest.approx({E: (0.5 + 0.75) / 2, A: 0.0, B: (0.0 + 0.5) / 2})
    assert profiles[("omp_after", 0.2)] == pytest.approx({E: 0.0, A: 0.25, B: 0.5})
    assert profiles[("gmp", 0.36)] == pytest.approx({E: 0.125, A: 0.375, B: 0.5})  # tuning 1 left out
    assert profiles[("lth", 0.2)] == {E: 0.1, A: 0.3, B: 0.2}


def test_embedding_flags_name_snip_only(run):
    flags = embedding_flags(run)
    assert list(flags) == [("snip", 0.2)]
    assert E in flags[("snip", 0.2)] and "62.5%" in flags[("snip", 0.2)] and "12.5%" in flags[("snip", 0.2)]


def test_pair_similarities_are_means_over_the_matching_seeds(run):
    # r of (0, .25, .5) against snip's seed 0 (.5, 0, 0) and seed 1 (.75, 0, .5), by hand:
    r_seed0 = -0.125 / math.sqrt(0.125 * (1 / 6))       # = -sqrt(3)/2
    r_seed1 = -(1 / 16) / math.sqrt(0.125 * (7 / 24))
    snip_r = (r_seed0 + r_seed1) / 2
    expected = [
        # snip vs either: seed 0 keeps 6 of the 10 weights either keeps; seed 1 has no snip mask
        PairSimilarity(0.2, "snip", "gmp", 0.6, snip_r, 1, 2),
        PairSimilarity(0.2, "snip", "omp_after", 0.6, snip_r, 1, 2),
        # seed 0: 7 kept by both of 9 kept by either; seed 1: identical masks
        PairSimilarity(0.2, "gmp", "omp_after", (7 / 9 + 1) / 2, 1.0, 2, 2),
        # seed 0 only: 6 of 8; r of (0, .5, .5) against (.25, .25, .5) is 0.5
        PairSimilarity(0.36, "gmp", "omp_after", 0.75, 0.5, 1, 1),
    ]
    got = pair_similarities(run)
    assert [(p.sparsity, p.method_a, p.method_b, p.n_jaccard, p.n_correlation) for p in got] == \
           [(p.sparsity, p.method_a, p.method_b, p.n_jaccard, p.n_correlation) for p in expected]
    for mine, theirs in zip(got, expected):
        assert mine.jaccard == pytest.approx(theirs.jaccard), mine
        assert mine.layer_correlation == pytest.approx(theirs.layer_correlation), mine


def test_a_run_without_mask_files_still_correlates_layers(run):
    for path in (run.run_dir / "masks").iterdir():
        path.unlink()
    (run.run_dir / "masks").rmdir()
    got = pair_similarities(run)
    assert all(p.jaccard is None and p.n_jaccard == 0 for p in got)
    assert [p.n_correlation for p in got] == [2, 2, 2, 1]


def test_another_architecture_is_left_out(run):
    assert pair_similarities(run, model="graph2tree") == []
    assert layer_profiles(run, model="graph2tree") == {}


def test_small_embedding_matrices_are_not_judged_when_sizes_are_known():
    # MiniLM at 36 % by magnitude: position (0.9 % of the weights) and token-type (0.003 %)
    # embeddings lose most of their small weights; the token embedding is pruned like the rest
    layers = {"embeddings.word_embeddings.weight": 0.36, "embeddings.position_embeddings.weight": 0.677,
              "embeddings.token_type_embeddings.weight": 0.918, "layer.0.q.weight": 0.35,
              "layer.0.k.weight": 0.35, "layers.1-5.weight": 0.35}
    sizes = {"embeddings.word_embeddings.weight": 11_720_448, "embeddings.position_embeddings.weight": 196_608,
             "embeddings.token_type_embeddings.weight": 768, "layer.0.q.weight": 147_456,
             "layer.0.k.weight": 147_456, "layers.1-5.weight": 10_616_832}   # MiniLM: 22.8 M in all
    assert embedding_collapse(layers) is not None            # without sizes the tiny ones count
    assert embedding_collapse(layers, sizes) is None
    snip = dict(layers, **{"embeddings.word_embeddings.weight": 0.697, "embeddings.position_embeddings.weight": 0.0,
                           "embeddings.token_type_embeddings.weight": 0.0, "layer.0.q.weight": 0.0,
                           "layer.0.k.weight": 0.0, "layers.1-5.weight": 0.0})
    assert "word_embeddings.weight 69.7%" in embedding_collapse(snip, sizes)
