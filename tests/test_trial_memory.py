"""A trial holds one model, its optimizer state, the current batch and its masks, nothing more.

Memory, not time: ``trial_memory_harness.py`` runs CSQA trials of a 4.3M-parameter random BERT in a
fresh interpreter and counts the bytes of every live tensor at every report. The bounds below are
computed from the model's size, the optimizer (AdamW: two state tensors per parameter) and the masks,
so a regression (a second copy of the model kept by the runtime, LTH's rewind point or the dense
run's best weights kept in memory, a trial's tensors outliving it) fails the test by at least one
model's size, far above the slack.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("trial_memory_harness.py")
ADAMW_STATE = 2            # exp_avg and exp_avg_sq, fp32 like the weights
MASK_BYTES = 1             # a bool per prunable element
MASKS_AT_ONCE = 2          # GMP and RigL hold the current mask and the next
ENFORCER_CHUNK = 4 << 20   # smctune.pruning.enforce: a 2**20-element float32 working chunk
SLACK = 64 << 10           # scalars: optimizer step counters, the running loss


@pytest.fixture(scope="module")
def measured():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HARNESS.parents[1]), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, str(HARNESS)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_runtime_keeps_its_data_and_no_model(measured):
    """The starting weights every new model copies live in a file, not in the worker's memory."""
    assert measured["runtime_bytes"] <= measured["data_bytes"] + SLACK


@pytest.mark.parametrize("method", ["dense", "omp_before", "lth", "gmp"])
def test_a_trial_holds_model_optimizer_batch_and_masks_only(measured, method):
    weights = measured["parameter_bytes"]
    masks = 0 if method == "dense" else MASKS_AT_ONCE * MASK_BYTES * measured["prunable_elements"]
    chunk = 0 if method == "dense" else ENFORCER_CHUNK
    bound = weights * (1 + 1 + ADAMW_STATE) + masks + chunk + measured["batch_bytes"] + SLACK
    held = measured["methods"][method]["held_bytes"]
    assert measured["methods"][method]["reports"] >= 2
    assert held <= bound, (f"{method} holds {held / 2**20:.1f} MiB of tensors beyond the runtime, bound "
                           f"{bound / 2**20:.1f} MiB (weights {weights / 2**20:.1f} MiB)")
    # and it held them: weights, gradients and both Adam moments were alive at the reports
    assert held >= weights * (1 + 1 + ADAMW_STATE)


def test_nothing_outlives_a_trial(measured):
    """A reused Ray worker starts its next trial with only the runtime (and its data) in memory."""
    assert {m: r["after_bytes"] for m, r in measured["methods"].items()} == dict.fromkeys(measured["methods"], 0)


def test_peak_rss_growth_is_bounded_by_the_model(measured):
    """RSS is what the machine pays: once a warm-up trial has loaded what a worker loads once (the
    tokenizer, transformers' model code), the method trials' peak RSS beyond the RSS between trials
    stays within their tensors twice over (allocator slack, activations of this model's small
    batches) plus a fixed 32 MiB."""
    weights = measured["parameter_bytes"]
    tensors = weights * (2 + ADAMW_STATE) + MASKS_AT_ONCE * MASK_BYTES * measured["prunable_elements"]
    bound_mb = (2 * tensors + ENFORCER_CHUNK) / 2**20 + 32
    assert measured["peak_rss_growth_mb"] <= bound_mb


def test_sweep_workers_run_with_two_malloc_arenas(ray_session):
    """The trial runs in a thread of its own in a Ray worker; with glibc's default of one heap per
    allocating thread its peak RSS was 0.9 GB above a plain process's (benchmarks/bench_trial.py)."""
    import ray

    from smctune.sweep.ray_session import WORKER_MALLOC_ARENAS

    @ray.remote(num_cpus=0)
    def arenas():
        return os.environ.get("MALLOC_ARENA_MAX")

    assert ray.get(arenas.remote()) == os.environ.get("MALLOC_ARENA_MAX", WORKER_MALLOC_ARENAS)
