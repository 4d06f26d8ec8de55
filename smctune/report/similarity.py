"""Do different pruning methods prune the same weights? The paper's "lazy regime" analysis.

SMC-Bench explains why magnitude methods (OMP before or after fine-tuning, GMP, LTH) fail at about
the same sparsity: fine-tuning moves the pretrained weights so little that they all end up with nearly
the same mask. SNIP is the exception on transformers: the token rows that get no gradient from the
calibration batch score zero, so it empties the embeddings first. This module measures both claims
on a finished run, torch-free:

* mask overlap: Jaccard index of the *kept* weights, pooled over the tensors both masks have
  (``|A and B| / |A or B|``), from the files ``smctune.rundir.masks`` saves;
* layer allocation: Pearson r of two methods' per-layer sparsity (the records' ``layers``), which
  needs no mask files and so also works for runs made before masks were saved;
* embedding collapse: an embedding matrix (a name containing "embed") at least 99 % pruned, or the
  embedding matrices on average at least 0.30 sparser than the other layers.

Trials count as in ``smctune.report.analysis``: status ok or collapsed, levels matched to the sweep grid
within 1e-4 (IMP rounds off the grid are skipped); only tuning 0 (the search space's defaults), so
a searched cell's tunings never enter a mean. Pairs are matched on (architecture, seed, fold).
"""
from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass
from itertools import combinations
from typing import Iterable, Mapping, Optional

import numpy as np

from smctune.errors import UserError
from smctune.report.cell_stats import match_grid, planned_rows
from smctune.report.load import DENSE, RunResults, trials_of
from smctune.report.similarity_cache import JaccardCache
from smctune.rundir.masks import load_packed, mask_files
from smctune.rundir.packed_mask import PackedMask
from smctune.rundir.records import FINISHED_STATUSES

EMBEDDING_MARK = "embed"   # case-insensitive part of an embedding matrix's name
EMPTIED = 0.99             # an embedding matrix this sparse has lost (almost) every token row
EMBEDDING_GAP = 0.30       # embeddings this much sparser than the rest: the criterion singled them out
_SLACK = 1e-9              # records round layer sparsity to 6 digits; a threshold hit exactly counts
MIN_SHARE = 0.01           # embedding matrices holding less of the prunable weights are not judged


@dataclass(frozen=True)
class PairSimilarity:
    """Two methods at one grid sparsity: means over the (seed, fold) pairs both measured."""

    sparsity: float
    method_a: str
    method_b: str
    jaccard: Optional[float]             # None: no pair had both mask files
    layer_correlation: Optional[float]   # None: no pair had a defined correlation
    n_jaccard: int
    n_correlation: int


@dataclass(frozen=True)
class _Measured:
    """One trial's finished level: what the pairs need of it."""

    trial_id: str
    level: float     # the level's own target (an IMP round's), which names its mask file
    layers: dict


# --------------------------------------------------------------------------------------------------
# measures

def jaccard(mask_a: Mapping[str, np.ndarray], mask_b: Mapping[str, np.ndarray]) -> Optional[float]:
    """Overlap of the kept weights (True = kept) over the tensors both masks have, pooled (a large
    matrix weighs by its size, as it does in the global sparsity); None without a common tensor or
    when both keep nothing."""
    return packed_jaccard(PackedMask.of(mask_a), PackedMask.of(mask_b))


def packed_jaccard(a: PackedMask, b: PackedMask) -> Optional[float]:
    """``jaccard`` on the bits as saved: |A and B| is the popcount of the bytes' ``and`` (padding
    bits are zero in both), |A or B| = |A| + |B| - |A and B| with each mask's count taken once."""
    if a.flat is not None and b.flat is not None and a.layout == b.layout:
        # the usual case (two masks of one model): one pass over all tensors at once
        both = int(np.bitwise_count(np.bitwise_and(a.flat, b.flat)).sum(dtype=np.int64))
        either = a.kept() + b.kept() - both
        return both / either if either else None
    common = [name for name in a.shapes if name in b.shapes]
    if not common:
        return None
    both = either = 0
    for name in common:
        if a.shapes[name] != b.shapes[name]:
            raise UserError(f"masks of {name!r} differ in shape: {a.shapes[name]} vs {b.shapes[name]}")
        shared = int(np.bitwise_count(np.bitwise_and(a.bits[name], b.bits[name])).sum(dtype=np.int64))
        both += shared
        either += a.kept(name) + b.kept(name) - shared
    return both / either if either else None


def layer_correlation(layers_a: Mapping[str, float], layers_b: Mapping[str, float]) -> Optional[float]:
    """Pearson r of the per-layer sparsity over the layers both have; None with fewer than two such
    layers or a constant side (uniform per-layer pruning has no allocation to correlate)."""
    common = [name for name in layers_a if name in layers_b]
    xs = [float(layers_a[name]) for name in common]
    ys = [float(layers_b[name]) for name in common]
    if len(common) < 2 or len(set(xs)) == 1 or len(set(ys)) == 1:
        return None
    return max(-1.0, min(1.0, statistics.correlation(xs, ys)))  # clamp rounding just past +-1


def embedding_collapse(layers: Mapping[str, float], sizes: Optional[Mapping[str, int]] = None) -> Optional[str]:
    """Why this per-layer sparsity looks like SNIP's embedding failure, in one line; None when it
    does not, or when there are no embedding matrices or nothing else to compare them with.

    With ``sizes`` (weights per layer), embedding matrices holding under ``MIN_SHARE`` of the
    weights are left out: magnitude pruning takes most of MiniLM's position and token-type
    embeddings (0.9 % and 0.003 % of its weights, small values) at 36 % sparsity, which costs little
    and is not the failure SNIP shows, emptying the token embedding that every input goes through."""
    total = sum(sizes.get(name, 0) for name in layers) if sizes else 0
    embeddings = {name: float(value) for name, value in layers.items() if EMBEDDING_MARK in name.lower()
                  and not (total and sizes.get(name, total) < MIN_SHARE * total)}
    others = [float(value) for name, value in layers.items() if EMBEDDING_MARK not in name.lower()]
    if not embeddings or not others:
        return None
    reasons = []
    emptied = [f"{name} {value:.1%}" for name, value in embeddings.items() if value >= EMPTIED - _SLACK]
    if emptied:
        reasons.append(f"embedding matrix pruned >= {EMPTIED:.0%}: {', '.join(emptied)}")
    # per matrix, not averaged over the embeddings: SNIP empties the big token embedding while the
    # small position and type embeddings keep their weights, and a mean would hide exactly that
    mean_others = statistics.fmean(others)
    singled_out = [f"{name} {value:.1%}" for name, value in embeddings.items()
                   if value - mean_others >= EMBEDDING_GAP - _SLACK]
    if singled_out:
        reasons.append(f"{', '.join(singled_out)} pruned vs {mean_others:.1%} on average for the other "
                       f"{len(others)} layers")
    return "; ".join(reasons) or None


# --------------------------------------------------------------------------------------------------
# a run

def layer_profiles(run: RunResults, model: Optional[str] = None) -> dict[tuple[str, float], dict[str, float]]:
    """``(method, grid sparsity) -> {layer: sparsity}``, each layer averaged over the trials (seeds,
    folds) that report it."""
    values: dict = {}
    for method, grid_level, _, measured in _measured_levels(run, model):
        per_layer = values.setdefault((method, grid_level), {})
        for name, value in measured.layers.items():
            per_layer.setdefault(name, []).append(float(value))
    return {key: {name: statistics.fmean(v) for name, v in per_layer.items()}
            for key, per_layer in values.items()}


def embedding_flags(run: RunResults, model: Optional[str] = None) -> dict[tuple[str, float], str]:
    """``(method, grid sparsity) -> reason`` for every averaged profile ``embedding_collapse`` flags."""
    sizes = layer_sizes(run, model)
    return {key: reason for key, profile in layer_profiles(run, model).items()
            if (reason := embedding_collapse(profile, sizes)) is not None}


def layer_sizes(run: RunResults, model: Optional[str] = None) -> dict[str, int]:
    """Weights per layer: from the records' ``layer_sizes``, else (older records) from the shapes in
    one of this architecture's mask files; {} when neither exists."""
    sizes: dict = {}
    trials = trials_of(run, model)
    for trial in trials:
        for level in trial.levels:
            found = level.get("layer_sizes")
            if isinstance(found, dict):
                sizes.update({name: int(n) for name, n in found.items() if isinstance(n, (int, float))})
    if sizes:
        return sizes
    mine = {t.trial_id for t in trials}
    for (trial_id, _), path in sorted(mask_files(run.run_dir).items()):
        mask = _load_or_skip(path, {}) if trial_id in mine else None
        if mask is not None:
            return {name: math.prod(shape) for name, shape in mask.shapes.items()}
    return {}


def pair_similarities(run: RunResults, model: Optional[str] = None) -> list[PairSimilarity]:
    """Every grid sparsity x unordered pair of sparse methods that both measured it (in the order of
    ``run.spec.methods``). Masks are loaded one (architecture, seed, fold) at a time, so at most one
    mask per method is in memory."""
    members: dict = {}   # (method, grid sparsity) -> {(arch, seed, fold): _Measured}
    for method, grid_level, key, measured in _measured_levels(run, model):
        members.setdefault((method, grid_level), {})[key] = measured
    files = mask_files(run.run_dir)
    cache = JaccardCache(run.run_dir)
    methods = [m for m in dict.fromkeys(planned_rows(run.spec)) if m != DENSE]
    out = []
    for grid_level in sorted(run.spec.sparsities):
        present = [m for m in methods if members.get((m, grid_level))]
        # module-sensitivity rows (method[group]) are compared within their group: other groups'
        # masks cover other tensors
        pairs = [(a, b) for a, b in combinations(present, 2) if _group_of(a) == _group_of(b)]
        jaccards: dict = {pair: [] for pair in pairs}
        correlations: dict = {pair: [] for pair in pairs}
        keys = dict.fromkeys(key for m in present for key in members[(m, grid_level)])
        for key in keys:
            loaded: dict = {}   # this member's masks, loaded on first use
            for a, b in pairs:
                first, second = members[(a, grid_level)].get(key), members[(b, grid_level)].get(key)
                if first is None or second is None:
                    continue
                correlations[(a, b)].append(layer_correlation(first.layers, second.layers))
                jaccards[(a, b)].append(_mask_jaccard(first, second, files, loaded, cache))
        for a, b in pairs:
            j, r = _present(jaccards[(a, b)]), _present(correlations[(a, b)])
            out.append(PairSimilarity(grid_level, a, b, statistics.fmean(j) if j else None,
                                      statistics.fmean(r) if r else None,
                                      len(j), len(r)))
    cache.save()
    return out


def _group_of(row: str) -> str:
    return row[row.index("["):] if row.endswith("]") and "[" in row else ""


def _measured_levels(run: RunResults, model: Optional[str]):
    """``(method, grid sparsity, (arch, seed, fold), _Measured)`` of every finished sparse level on
    the grid that reports its per-layer sparsity."""
    grid = tuple(sorted(run.spec.sparsities))
    for trial in trials_of(run, model):
        if trial.method == DENSE or trial.tuning or trial.status not in FINISHED_STATUSES:
            continue
        for level in trial.levels:
            grid_level = match_grid(float(level["sparsity"]), grid)
            layers = level.get("layers")
            if grid_level is None or not isinstance(layers, dict) or not layers:
                continue
            yield (trial.method, grid_level, (trial.model, trial.seed, trial.fold),
                   _Measured(trial.trial_id, float(level["sparsity"]), layers))


def _mask_jaccard(first: _Measured, second: _Measured, files: dict, loaded: dict,
                  cache: JaccardCache) -> Optional[float]:
    """The pair's overlap from the cache, else from the mask files (each read once per report and
    (architecture, seed, fold): ``loaded``)."""
    paths = [files.get((measured.trial_id, round(measured.level, 4))) for measured in (first, second)]
    if None in paths:
        return None
    found, value = cache.get(*paths)
    if found:
        return value
    masks = [_load_or_skip(path, loaded) for path in paths]
    if None in masks:
        return None
    value = packed_jaccard(*masks)
    cache.put(*paths, value)
    return value


_WARNED: set = set()


def _load_or_skip(path, loaded: dict) -> Optional[PackedMask]:
    """One damaged mask file costs its own pairs, not the whole report: it is named once on stderr
    and left out of the overlap."""
    if path not in loaded:
        try:
            loaded[path] = load_packed(path)
        except UserError as err:
            loaded[path] = None
            if path not in _WARNED:
                _WARNED.add(path)
                print(f"smctune: warning: skipped in mask overlap: {err}", file=sys.stderr)
    return loaded[path]


def _present(values: Iterable[Optional[float]]) -> list[float]:
    return [v for v in values if v is not None]

