"""Mixed precision (``train.precision``), one way for every family: the trial loop wraps forward
passes in autocast, and fp16 goes through a gradient scaler. No GPU here: CPU autocast runs the same
code path (bf16 and fp16 autocast both exist on CPUs), which is what these trials exercise."""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pytest
import torch

from smctune.catalog import registry
from smctune.config.search_space import load_search_space
from smctune.config.specs import TrialSpec
from smctune.pruning import num_pruned, select_prunable
from smctune.rundir.safe_load import load_tensors
from smctune.train.precision import resolve
from smctune.train.trial import CallbackReporter, Trial


def test_auto_is_fp32_on_a_cpu_and_explicit_choices_are_kept():
    assert resolve("auto", "cpu").name == "fp32"
    assert resolve("bf16", "cpu").name == "bf16" and resolve("fp16", "cpu").scaler() is not None
    assert resolve("fp32", "cpu").scaler() is None and resolve("bf16", "cpu").scaler() is None
    with pytest.raises(ValueError, match="valid: auto, fp32, bf16, fp16"):
        resolve("fp8", "cpu")


def test_auto_on_cuda_is_bf16_where_supported_else_fp16(monkeypatch):
    """Resolution only (no GPU here): which the device supports decides."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve("auto", "cuda").name == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve("auto", "cuda").name == "fp16"


def test_a_bad_precision_in_a_search_space_is_refused(tmp_path):
    from smctune.errors import UserError

    space = tmp_path / "space.yaml"
    space.write_text("extends: csqa.yaml\npresets:\n  smoke:\n    train: {precision: half}\n")
    with pytest.raises(UserError, match="precision"):
        load_search_space("csqa", str(space))


def _spec(task: str, method: str, precision: str, cache: str) -> TrialSpec:
    space = load_search_space(task)
    arch = space.architectures[0] if space.architectures else None
    preset = space.resolve("smoke", arch, "paper")
    train = dataclasses.replace(preset.train, max_steps=6, eval_every=3, eval_limit=16, checkpoint_every_s=0,
                                precision=precision)
    tunables = space.tunables(method, "smoke", registry.method_spec(method).defaults("paper"), "paper")
    return TrialSpec(task=task, method=method, sparsity=0.5, seed=0, preset="smoke", model=preset.model,
                     train=train, tunables=tunables, prunable=space.prunable_rules(method=method, faithful="paper"),
                     data_dir=None, cache_root=cache, fold=0 if task == "mawps" else None)


# every family; the arithmetic models had no mixed precision before (and -1e12 overflowed fp16)
@pytest.mark.slow
@pytest.mark.parametrize("task", ["csqa", "mawps", "thermo", "mt-2to2"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_every_family_trains_under_mixed_precision_and_pruned_weights_stay_zero(task, precision, single_thread):
    spec = _spec(task, "omp_before", precision, tempfile.mkdtemp(prefix="smctune-prec-"))
    reporter = CallbackReporter(keep_checkpoints=True)
    trial = Trial(spec, reporter, device="cpu")
    trial.run()
    final = reporter.reports[-1]
    assert final["level_done"] and final["costs"]["precision"] == precision
    assert torch.isfinite(torch.tensor(final["loss"]))
    # fp32 weights, exact zeros at the pruned positions after the steps (the mask is enforced on
    # unscaled fp32 weights, whatever the forward pass ran in)
    prunable = select_prunable(trial.model, spec.prunable.get("include") or None, spec.prunable.get("exclude") or None)
    assert all(p.param.dtype == torch.float32 for p in prunable)
    total = sum(p.numel for p in prunable)
    assert sum(int((p.param == 0).sum()) for p in prunable) >= num_pruned(total, 0.5)
    # an fp16 trial's checkpoint carries its loss scale, so a retried trial resumes it
    state = load_tensors(Path(reporter.checkpoints[0]) / "state.pt")
    assert ("scaler" in state) == (precision == "fp16")
