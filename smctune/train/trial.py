"""One sparse fine-tuning loop for every task and method.

A trial is: build the task runtime, get the starting weights (pretrained, or the cached dense
fine-tuned checkpoint), let the method's schedule decide when and how much to prune, fine-tune with the
mask enforced after every optimizer step, evaluate every ``eval_every`` steps, and report each
evaluation through a ``Reporter``. Methods differ only in their ``MethodSpec`` (the catalog); what a
schedule does with the pieces here (prune, fine-tune, rewind, cache the dense model) is in
``smctune.train.schedules``.

The reporter decouples the loop from Ray: ``smctune.sweep.run`` passes a Ray Tune reporter, tests and
notebooks pass ``CallbackReporter``.
"""
from __future__ import annotations

import dataclasses
import math
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol

import torch

from smctune.train import optim
from smctune.train.costs import TrialCosts
from smctune.train.memory import cuda_peak_mb, release_memory
from smctune.train.offload import snapshot
from smctune.train.precision import resolve as resolve_precision
from smctune.catalog import registry
from smctune.train.level import LevelState
from smctune.train.schedules import SCHEDULES, schedule_of
from smctune.train.collapse import LOSS_NOT_FINITE, at_chance_reason, empty_layer_reason
from smctune.config.specs import TrialSpec
from smctune.rundir.dense_cache import DenseCache
from smctune.rundir.masks import save_mask
from smctune.rundir.safe_load import load_tensors
from smctune.pruning import GMPSchedule, Mask, SparseTraining, compute_mask
from smctune.pruning import prune as prune_weights


class Reporter(Protocol):
    def report(self, metrics: dict, checkpoint_dir: Optional[str] = None) -> None: ...

    def restore(self) -> Optional[str]:
        """A directory holding the last checkpoint of this trial, if it is being retried."""


@dataclass
class CallbackReporter:
    """Reporter for tests and notebooks: keeps every report, optionally forwards it."""

    callback: Optional[Callable[[dict], None]] = None
    reports: list = field(default_factory=list)
    keep_checkpoints: bool = False
    checkpoints: list = field(default_factory=list)

    def report(self, metrics: dict, checkpoint_dir: Optional[str] = None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir and self.keep_checkpoints:
            kept = tempfile.mkdtemp(prefix="smctune-ckpt-")
            shutil.copytree(checkpoint_dir, kept, dirs_exist_ok=True)
            self.checkpoints.append(kept)
        if self.callback:
            self.callback(dict(metrics))

    def restore(self) -> Optional[str]:
        return self.checkpoints[-1] if self.checkpoints else None


class Trial:
    """Runs one ``TrialSpec``. Kept as an object so the per-trial pieces (runtime, model, mask,
    reporter) are not threaded through every function."""

    def __init__(self, spec: TrialSpec, reporter: Reporter, device: Optional[str] = None):
        self.spec = spec
        self.reporter = reporter
        self.method = registry.method_spec(spec.method)
        self.schedule = schedule_of(self.method)
        self.task = registry.load_task(spec.task)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.metric = self.task.metric
        self.cache = DenseCache(spec.cache_root)
        self.dense_key = spec.dense_key()
        self._last_checkpoint = time.monotonic()
        self.costs = TrialCosts()
        self.precision = resolve_precision(spec.train.precision, self.device)
        self.resumed_from = 0  # global step of the checkpoint a retried trial continued from
        # (step, StateFile of the weights) of the dense run's best evaluation since this process
        # started; after a retry from a checkpoint an earlier best is not recoverable and "best" falls
        # back to final
        self._best_dense: tuple = (None, None)
        self._dense_locked = False   # this trial holds the dense cache key's lock (run)

    # ------------------------------------------------------------------ entry point
    def run(self) -> None:
        _seed_everything(self.spec.seed)
        if self.schedule is not SCHEDULES["none"]:
            self._train()
            return
        # one dense model per cache key, trained once even when two sweeps (or a retrain of a
        # damaged entry) want it at the same time: the key's lock decides who trains, the rest reuse it
        with self.cache.training(self.dense_key, f"dense {self.spec.task} seed {self.spec.seed}") as needed:
            if not needed:
                self._report_cached_dense()
                return
            self._dense_locked = True
            self._train()

    def _train(self) -> None:
        with self.costs.phase("setup"):
            self.runtime = _runtime_for(self.task, self.spec, self.device)
            torch.manual_seed(self.spec.seed)
            self.model = self.runtime.new_model().to(self.device)
            # LTH rewinds to the pre-fine-tuning weights; captured (in a local file, not in memory)
            # before a restore overwrites them
            self.rewind_state = snapshot(self.model) if self.spec.tunables.get("rewind") else None
            restored = self._restore()
        self.schedule.train(self, restored)

    # ------------------------------------------------------------------ what schedules use
    def cache_dense(self, level: LevelState) -> None:
        """Store the finished dense model (and its best-evaluated weights) for the "after" methods."""
        meta = {"key": self.dense_key, "task": self.spec.task, "seed": self.spec.seed,
                "preset": self.spec.preset, "metric": self.metric,
                "final": level.history[-1][self.metric], "best": level.best,
                "history": level.history, "step": level.step}
        best_step, best_file = self._best_dense
        if best_step == level.step:  # the best evaluation was the last: best.pt = model.pt
            best_file = None
        meta["best_step"] = best_step if best_file is not None else level.step
        with self.costs.phase("checkpoint"):
            self.cache.save(self.dense_key, self.model.state_dict(), meta,
                            best_state=best_file.load() if best_file is not None else None,
                            locked=self._dense_locked)

    def rewind(self) -> None:
        """LTH's rewind: back to the weights the trial started from (before any fine-tuning)."""
        self.model.load_state_dict(self.rewind_state.load(map_location=self.device))

    # ------------------------------------------------------------------ pieces
    def reinit_head(self, round_: int) -> None:
        """A fresh draw of every module outside the pretrained backbone (SMC-Bench's protein IMP builds
        a new head each round), seeded by the trial's seed and the round so a retry draws the same."""
        prefix = getattr(self.runtime, "backbone_prefix", "")
        if not prefix:
            raise RuntimeError(f"reinit_head: task {self.spec.task} has no backbone to tell the head from")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.spec.seed * 1009 + round_)
            for name, module in self.model.named_modules():
                owns = any(True for _ in module.parameters(recurse=False))
                if name and owns and not f"{name}.".startswith(prefix) and hasattr(module, "reset_parameters"):
                    module.reset_parameters()

    def load_start_weights(self) -> None:
        if self.method.start != "dense":
            return
        problem = self.cache.verify(self.dense_key)
        if problem:
            raise RuntimeError(
                f"dense checkpoint {self.dense_key} is missing from {self.cache.root} ({problem}): "
                "the dense baseline of this seed did not finish")
        which = self.spec.tunables.get("dense_checkpoint", "final")
        self.model.load_state_dict(self.cache.load_state(self.dense_key, map_location=self.device,
                                                         which=which))

    def prune(self, sparsity: float, current: Optional[Mask], zero: bool = True) -> Mask:
        with self.costs.phase("prune"):
            return self._prune(sparsity, current, zero)

    def _prune(self, sparsity: float, current: Optional[Mask], zero: bool) -> Mask:
        rules = self.spec.prunable or {}
        t = self.spec.tunables
        criterion = t.get("score") or self.method.criterion   # snip's score: |g*w| or SMC-Bench's |g|
        kwargs = dict(scope=self.method.scope, include=rules.get("include") or None,
                      exclude=rules.get("exclude") or None, current=current, seed=self.spec.seed,
                      pattern=t.get("pattern"), options={k: t[k] for k in self.method.options})
        if t.get("calibration_batches"):
            # a stream of its own, so scoring never shifts the training data order
            stream = self.runtime.train_batches(self.spec.seed + 104729)
            kwargs.update(batches=[next(stream) for _ in range(int(t["calibration_batches"]))],
                          loss_fn=self.runtime.loss)
        if zero:
            return prune_weights(self.model, criterion, sparsity, **kwargs)
        return compute_mask(self.model, criterion, sparsity, **kwargs)

    def fine_tune(self, mask: Optional[Mask], level: LevelState, restored: Optional[dict],
                   gmp: Optional[GMPSchedule] = None, rigl: Optional[dict] = None) -> bool:
        """Train ``level`` to its budget; False when the trial collapsed (loss not finite, or a rule
        of ``spec.stop``) and must not go on."""
        train = self._level_train(level)
        self.model.train()
        optimizer, scheduler = optim.build(self.model, train,
                                           getattr(self.runtime, "backbone_prefix", ""))
        # the same object users drive from their own loops: enforcement, GMP prune steps (through
        # this trial's prune: its criterion, include/exclude, seed, calibration batches), RigL
        sparse = None if mask is None else SparseTraining(
            self.model, optimizer, mask=mask, gmp=gmp, rigl=rigl,
            prune_fn=lambda target, current: self.prune(target, current=current),
            strategy=_ENFORCEMENT[self.spec.tunables.get("optimizer_state", "masked")])
        scaler = self.precision.scaler()
        if restored:  # the next before_step re-applies the mask to the loaded optimizer state
            optimizer.load_state_dict(restored["optimizer"])
            scheduler.load_state_dict(restored["scheduler"])
            if scaler is not None and restored.get("scaler"):
                scaler.load_state_dict(restored["scaler"])
        batches = self.runtime.train_batches(self.spec.seed * 7919 + (level.round or 0))
        for _ in range(level.step):  # keep the data order identical after a resume
            next(batches)
        # the running loss stays on the device: reading it every step would stall a GPU on every
        # update; it is checked for finiteness every FINITE_CHECK_EVERY steps and at evaluations
        # (a non-finite loss makes the running sum non-finite, so none is missed)
        running_loss, running_n = torch.zeros((), device=self.device), 0
        while level.step < train.max_steps:
            with self.costs.phase("train"):
                running_loss += self._step(next(batches), level.step + 1, optimizer, scheduler, scaler,
                                           sparse, train.grad_clip)
                running_n += 1
                level.step += 1
                self.costs.steps += 1
                if sparse is not None:
                    sparse.on_step_end(level.step)
                    mask = sparse.mask
            evaluate = level.step % train.eval_every == 0 or level.step == train.max_steps
            if (evaluate or level.step % FINITE_CHECK_EVERY == 0) and not torch.isfinite(running_loss):
                self._report_eval(level, mask, math.nan, diverged=True)
                return False  # collapsed: a loss that is not finite never recovers
            if evaluate:
                collapsed = self._report_eval(level, mask, float(running_loss) / running_n, gmp=gmp,
                                              optimizer=optimizer, scheduler=scheduler, scaler=scaler)
                running_loss, running_n = torch.zeros((), device=self.device), 0
                if collapsed:
                    return False
        return True

    def _step(self, batch: dict, step: int, optimizer, scheduler, scaler,
              sparse: Optional[SparseTraining], grad_clip: float) -> torch.Tensor:
        """One update: forward under the trial's precision, backward (scaled for fp16), the mask's
        gradient and optimizer-state enforcement, clipping, the optimizer and lr steps. Returns the
        loss as a detached fp32 tensor on the device (read by the caller only now and then)."""
        with self.precision.autocast():
            loss = self.runtime.loss(self.model, batch)
        value = loss.detach().float()
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)   # true gradients for RigL's growth scores and for clipping
        del loss
        if sparse is not None:
            sparse.before_step(step)
        if grad_clip > 0:  # sparse: by the norm of the sparse network's gradient
            if sparse is not None:
                sparse.clip_grad_norm_(grad_clip)
            else:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)   # skipped when the scaled gradients overflowed
            scaler.update()
        scheduler.step()
        return value

    def _report_eval(self, level: LevelState, mask: Optional[Mask], train_loss: float, *,
                     gmp: Optional[GMPSchedule] = None, optimizer=None, scheduler=None, scaler=None,
                     diverged: bool = False) -> Optional[str]:
        """Evaluate, record and report one evaluation; returns why the trial collapsed, if it did."""
        train = self._level_train(level)
        ends = diverged or level.step >= train.max_steps
        if diverged:
            scores = {self.metric: float("nan"), "loss": float("nan")}
        else:
            with self.costs.phase("eval"), self.precision.autocast():
                scores = self.runtime.evaluate(self.model, final=ends)
            self.costs.evals += 1
        details = {key: float(value) for key, value in scores.items() if key not in (self.metric, "loss")}
        at_target = gmp is None or level.step >= gmp.end_step
        if at_target and not diverged:
            if mask is None and scores[self.metric] > level.best:
                # dense: keep the best-evaluated weights for `dense_checkpoint: best` (SMC-Bench)
                with self.costs.phase("checkpoint"):
                    self._best_dense = (level.step, snapshot(self.model, self._best_dense[1]))
            level.best = max(level.best, scores[self.metric])
        sparsity = mask.sparsity() if mask is not None else 0.0
        sparsity_all = mask.sparsity_over(self.model) if mask is not None else 0.0
        row = {"step": level.step, self.metric: scores[self.metric], "loss": scores["loss"],
               "train_loss": train_loss, "sparsity": sparsity, "sparsity_all": sparsity_all,
               "round": level.round, "level": level.target}
        level.history.append(row)
        # per-layer counts read every mask once: only when a stop rule needs them or the level ends
        layerwise = mask.layerwise() if mask is not None and (ends or self.spec.stop.empty_layers) else []
        collapsed = self._collapse_reason(level, layerwise, diverged, at_target)
        done = ends or bool(collapsed)
        if done and mask is not None and not layerwise:
            layerwise = mask.layerwise()
        metrics = dict(row, best=level.best if level.best > float("-inf") else scores[self.metric],
                       level_done=done, diverged=diverged, metric_name=self.metric,
                       dense_key=self.dense_key, global_step=self._global_step(level),
                       resumed_from=self.resumed_from, collapsed=collapsed)
        if details:
            metrics["details"] = details
        checkpoint = None
        if not done and optimizer is not None and self._checkpoint_due():
            with self.costs.phase("checkpoint"):
                checkpoint = self._write_checkpoint(level, mask, optimizer, scheduler, scaler)
        with self.costs.phase("report"):
            if done and mask is not None:
                metrics["layerwise_csv"] = mask.layerwise_csv(layerwise)
                metrics["layerwise"] = [[s.name, s.numel, s.kept] for s in layerwise]
                if self.spec.masks_dir:  # the final mask, for mask-overlap analysis (smctune.report.similarity)
                    save_mask(self.spec.masks_dir, self.spec.trial_id, level.target, mask)
            if done:   # what the trial cost so far (smctune.train.costs), with every finished level
                metrics["costs"] = dict(self.costs.summary(cuda_peak_mb(self.device)),
                                        precision=self.precision.name)
            self.reporter.report(metrics, checkpoint_dir=checkpoint)
            if checkpoint:
                shutil.rmtree(checkpoint, ignore_errors=True)
        return collapsed

    def _collapse_reason(self, level: LevelState, layerwise: list, diverged: bool,
                         at_target: bool) -> Optional[str]:
        """Why this evaluation ends the trial as collapsed (``smctune.train.collapse``); the dense baseline
        only collapses by a non-finite loss: every "after" method needs it, even at chance."""
        if diverged:
            return LOSS_NOT_FINITE
        if not self.schedule.judged_by_collapse_rule:
            return None
        stop = self.spec.stop
        reason = empty_layer_reason(stop, layerwise)
        if reason is None and at_target:  # GMP: judge the network only once it reached its sparsity
            reason = at_chance_reason(stop, level.history, self.metric, self.task.chance,
                                      self._level_train(level).max_steps)
        return reason

    def _level_train(self, level: LevelState):
        """The training settings of one level: ``train`` with the level's own budget, so the LR
        schedule, evaluations and the end of the level all follow it."""
        if level.max_steps is None or level.max_steps == self.spec.train.max_steps:
            return self.spec.train
        return dataclasses.replace(self.spec.train, max_steps=level.max_steps)

    def _global_step(self, level: LevelState) -> int:
        return ((level.round or 1) - 1) * self._level_train(level).max_steps + level.step

    def _report_cached_dense(self) -> None:
        meta = self.cache.meta(self.dense_key)
        for row in meta["history"]:
            done = row is meta["history"][-1]
            self.reporter.report(dict(row, best=meta["best"], level_done=done, diverged=False,
                                      metric_name=meta["metric"], dense_key=self.dense_key,
                                      global_step=row["step"], cached=True))

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_due(self) -> bool:
        every = self.spec.train.checkpoint_every_s
        if time.monotonic() - self._last_checkpoint >= every:
            self._last_checkpoint = time.monotonic()
            return True
        return False

    def _write_checkpoint(self, level, mask, optimizer, scheduler, scaler=None) -> str:
        directory = tempfile.mkdtemp(prefix="smctune-ckpt-")
        state = {"model": self.model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "level": dataclasses.asdict(level),
                 "rng": torch.get_rng_state()}
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        torch.save(state, Path(directory) / "state.pt")
        if mask is not None:
            mask.save(Path(directory) / "mask.pt")
        return directory

    def _restore(self) -> Optional[dict]:
        directory = self.reporter.restore()
        if not directory or not (Path(directory) / "state.pt").is_file():
            return None
        # tensors and plain containers only: a checkpoint on shared storage must never run code
        state = load_tensors(Path(directory) / "state.pt", map_location=self.device)
        self.model.load_state_dict(state["model"])
        torch.set_rng_state(state["rng"])
        mask_file = Path(directory) / "mask.pt"
        mask = Mask.load(mask_file, map_location=self.device) if mask_file.is_file() else None
        level = LevelState(**state["level"])
        self.resumed_from = self._global_step(level)
        return {"level": level, "mask": mask, "optimizer": state["optimizer"],
                "scheduler": state["scheduler"], "scaler": state.get("scaler")}


# tunable optimizer_state -> MaskEnforcer strategy
_ENFORCEMENT = {"masked": "auto", "smcbench": "weights_only"}
# steps between checks that the running training loss is finite (a check reads it from the device)
FINITE_CHECK_EVERY = 10

_RUNTIMES: dict = {}


def _runtime_for(task, spec: TrialSpec, device: str):
    """With ``reuse_actors`` one worker runs many trials of the same task and preset: tokenizing the
    data once per worker instead of once per trial saves seconds per trial. The runtime holds no
    per-trial state (models come from ``new_model()``), so sharing it is safe."""
    key = (spec.task, spec.preset, repr(spec.model), repr(spec.train), spec.data_dir, spec.fold, device)
    if key not in _RUNTIMES:
        _RUNTIMES.clear()
        _RUNTIMES[key] = task.build(preset=spec.preset, model=spec.model, train=spec.train,
                                    data_dir=spec.data_dir, device=device, fold=spec.fold)
    return _RUNTIMES[key]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # pragma: no cover - numpy comes with torch
        pass


def run_trial(spec: TrialSpec, reporter: Reporter, device: Optional[str] = None) -> None:
    try:
        Trial(spec, reporter, device).run()
    finally:
        # a reused worker starts its next trial from what the last one left: give back its model,
        # optimizer state and activations (the runtime, with its data, stays for the next trial)
        release_memory(device)


def set_threads(cpus: float) -> None:
    """Each trial uses its CPU share and no more, so concurrent trials do not oversubscribe cores."""
    torch.set_num_threads(max(1, int(cpus)))
