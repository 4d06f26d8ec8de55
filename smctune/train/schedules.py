"""Pruning schedules as objects: *when* a method prunes and to what sparsity, in one place.

A method in the catalog is a criterion, a scope and a schedule name; the schedule object says
everything that follows from the name, for the driver and for the worker alike:

* which trials the method needs in a sweep (one per grid level; one dense trial; one IMP trial that
  walks the whole ladder in rounds; one trial when an N:M pattern fixes the sparsity),
* which tunable combinations cannot work (checked in the driver, before any trial is scheduled),
* whether ``--search threshold`` can choose among its levels,
* how many fine-tunes of how many updates one trial costs (the cost estimate and the trial order),
* and how one trial is trained (``train``), through the pieces of ``smctune.train.trial.Trial``.

A new method whose parts exist is one catalog entry naming one of these schedules; a new schedule is
one class here, added to ``SCHEDULES``. Planning must stay torch-free (``smctune plan`` runs without
torch), so the training halves import the pruning library only when they run.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Iterable, Optional

from smctune.config.specs import TrialSpec
from smctune.errors import UserError, choices
from smctune.train.level import LevelState

if TYPE_CHECKING:  # the worker's trial; importing it here would pull torch into planning
    from smctune.train.trial import Trial


def lth_levels(grid: Iterable[float], rate: float) -> tuple[float, ...]:
    """IMP rounds needed to reach the top of the grid: sparsity 1-(1-rate)^k for k = 1..K."""
    top = max(grid) - 1e-6  # grid values are rounded to 6 digits
    rounds = 1
    while 1 - (1 - rate) ** rounds < top:
        rounds += 1
    return tuple(round(1 - (1 - rate) ** k, 6) for k in range(1, rounds + 1))


class Schedule:
    """A schedule with one fine-tune per trial at one sparsity level of the grid."""

    name: ClassVar[str] = ""
    # why ``--search threshold`` cannot pick this schedule's levels ("" = it can)
    unsearchable: ClassVar[str] = ""
    # the absolute collapse rule judges pruned networks only: the dense baseline must finish even at
    # chance, since every "after" method starts from it
    judged_by_collapse_rule: ClassVar[bool] = True

    def plan(self, tunables: dict, sparsities: tuple, common: dict) -> list[TrialSpec]:
        """The trials of one method in one (architecture, seed, fold); ``common`` holds the rest."""
        if tunables.get("pattern"):  # N:M fixes the sparsity: one trial, not the grid
            n, m = (int(x) for x in tunables["pattern"].split(":"))
            return [TrialSpec(sparsity=round(n / m, 6), **common)]
        return [TrialSpec(sparsity=s, **common) for s in sparsities]

    def check(self, method, tunables: dict, where: str) -> None:
        """Tunable combinations that cannot work, beyond each tunable's own range."""

    def searchable(self, trial: TrialSpec) -> bool:
        """Whether the threshold search may choose this trial's level (an N:M trial has no level to
        choose: its pattern fixes the sparsity)."""
        return not self.unsearchable and not trial.tunables.get("pattern")

    def fine_tunes(self, trial: TrialSpec) -> int:
        return 1

    def fine_tune_steps(self, trial: TrialSpec) -> int:
        return max(1, trial.train.max_steps)

    def train(self, trial: "Trial", restored: Optional[dict]) -> None:
        raise NotImplementedError

    @staticmethod
    def _start(trial: "Trial", restored: Optional[dict], initial: float, load_start: bool):
        """The mask and level a one-level schedule trains: the checkpoint's after a retry, else a
        fresh mask at ``initial`` sparsity of the starting weights."""
        if restored:
            return restored["mask"], restored["level"]
        if load_start:
            trial.load_start_weights()
        mask = trial.prune(initial, current=None)
        return mask, LevelState(round=None, target=trial.spec.sparsity)


class NoPruning(Schedule):
    """The dense baseline: fine-tune, then cache the weights every "after" method starts from."""

    name = "none"
    unsearchable = "dense has no sparsity levels"
    judged_by_collapse_rule = False

    def plan(self, tunables: dict, sparsities: tuple, common: dict) -> list[TrialSpec]:
        return [TrialSpec(sparsity=None, **common)]

    def train(self, trial: "Trial", restored: Optional[dict]) -> None:
        level = restored["level"] if restored else LevelState(round=None, target=0.0)
        if not trial.fine_tune(None, level, restored):
            return  # a diverged dense model is reported, never cached for "after" methods
        trial.cache_dense(level)


class OneShot(Schedule):
    """Prune once to the target (before fine-tuning, or after it from the cached dense weights),
    then fine-tune with the mask fixed."""

    name = "oneshot"

    def train(self, trial: "Trial", restored: Optional[dict]) -> None:
        mask, level = self._start(trial, restored, trial.spec.sparsity, load_start=True)
        trial.fine_tune(mask, level, restored)


class Gradual(Schedule):
    """GMP (Zhu & Gupta): from dense, the cubic schedule between ``start_fraction`` and
    ``end_fraction`` of the steps, pruning every ``frequency`` steps, exactly the target at the end."""

    name = "gmp"

    def check(self, method, tunables: dict, where: str) -> None:
        if not tunables["start_fraction"] < tunables["end_fraction"]:
            raise UserError(f"{where}: {method.name} start_fraction {tunables['start_fraction']} must be "
                            f"below end_fraction {tunables['end_fraction']}")

    def train(self, trial: "Trial", restored: Optional[dict]) -> None:
        from smctune.pruning.schedules import GMPSchedule

        t, total = trial.spec.tunables, trial.spec.train.max_steps
        gmp = GMPSchedule(final=trial.spec.sparsity, start_step=int(total * t["start_fraction"]),
                          end_step=int(total * t["end_fraction"]), frequency=int(t["frequency"]),
                          exact_end=t["schedule"] == "exact_end")
        mask, level = self._start(trial, restored, 0.0, load_start=False)
        trial.fine_tune(mask, level, restored, gmp=gmp)


class DynamicSparse(Schedule):
    """RigL: the start mask comes from the method's criterion (OMP, random, SNIP) at the pretrained
    weights; during fine-tuning the mask moves (drop by |w|, grow by dense |g|) at constant
    per-layer sparsity."""

    name = "rigl"

    def train(self, trial: "Trial", restored: Optional[dict]) -> None:
        t, total = trial.spec.tunables, trial.spec.train.max_steps
        if t["variant"] == "smcbench":  # SMC-Bench: drop 0.5 cosine-decayed to 0.005 over all steps
            rigl = dict(update_every=int(t["update_every"]), variant="smcbench", total_steps=total)
        else:
            rigl = dict(update_every=int(t["update_every"]), variant="paper", alpha=float(t["alpha"]),
                        end_step=max(1, int(total * float(t["end_fraction"]))))
        mask, level = self._start(trial, restored, trial.spec.sparsity, load_start=False)
        trial.fine_tune(mask, level, restored, rigl=rigl)


class Iterative(Schedule):
    """The IMP ladder (LTH, iterative oBERT): one trial, one fine-tune per round, each round pruning
    ``rate`` of the remaining weights, until the top of the grid is passed."""

    name = "imp"
    unsearchable = "one trial reports every level (IMP rounds)"

    def plan(self, tunables: dict, sparsities: tuple, common: dict) -> list[TrialSpec]:
        levels = lth_levels(sparsities, float(tunables["rate"]))
        return [TrialSpec(sparsity=levels[-1], levels=levels, **common)]

    def fine_tunes(self, trial: TrialSpec) -> int:
        return len(trial.levels) or 1

    def fine_tune_steps(self, trial: TrialSpec) -> int:
        """A round's budget: ``round_fraction`` of ``max_steps`` (SMC-Bench's protein IMP trains each
        round for part of the full budget)."""
        fraction = float(trial.tunables.get("round_fraction", 1.0))
        return max(1, round(trial.train.max_steps * fraction))

    def train(self, trial: "Trial", restored: Optional[dict]) -> None:
        """LTH: round k prunes ``rate`` of the remaining weights of round k-1's trained model by the
        criterion, rewinds the survivors to the pre-fine-tuning weights (pretrained encoder + the
        seed's head init) and fine-tunes again with a fresh optimizer and LR schedule. Without
        ``rewind`` (iterative oBERT) the pruned model, with the criterion's weight update, is
        fine-tuned on from where it is, the LR schedule restarted."""
        from smctune.pruning.schedules import imp_sparsity

        spec = trial.spec
        rate, rewind = float(spec.tunables["rate"]), bool(spec.tunables["rewind"])
        budget = self.fine_tune_steps(spec)
        if restored:
            mask, level = restored["mask"], restored["level"]
            first_round = level.round
        else:
            trial.load_start_weights()
            mask, level, first_round = None, None, 1
        for k in range(first_round, len(spec.levels) + 1):
            if level is None or level.round != k:
                target = imp_sparsity(k, rate)
                mask = trial.prune(target, current=mask, zero=not rewind)
                if rewind:
                    trial.rewind()
                if spec.tunables.get("reinit_head"):
                    trial.reinit_head(k)
                mask.apply(trial.model)
                level = LevelState(round=k, target=round(target, 6),
                                   max_steps=None if budget == spec.train.max_steps else budget)
                restored = None
            if not trial.fine_tune(mask, level, restored):
                return  # diverged: later rounds would prune NaN weights
            restored, level = None, None


SCHEDULES: dict[str, Schedule] = {s.name: s for s in (NoPruning(), OneShot(), Gradual(), DynamicSparse(),
                                                       Iterative())}


def schedule_of(method) -> Schedule:
    """The schedule of a catalog ``MethodSpec`` (anything with a ``schedule`` name) or of a name."""
    name = getattr(method, "schedule", method)
    if name not in SCHEDULES:
        raise UserError(f"unknown schedule '{name}' (valid: {choices(SCHEDULES)})")
    return SCHEDULES[name]
