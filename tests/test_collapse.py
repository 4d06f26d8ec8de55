"""The collapse stopper: absolute, per-trial rules that end a pruned trial as ``collapsed`` (a result)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from smctune.train.collapse import LOSS_NOT_FINITE, at_chance_reason, empty_layer_reason
from smctune.config.settings import StopSettings
from smctune.config.specs import SweepSpec
from smctune.config.search_space import load_search_space
from smctune.errors import UserError
from smctune.pruning.mask import LayerStat
from smctune.train.trial import CallbackReporter, Trial

from test_sweep import FAST_SPACE
from test_train import _spec


def rows(values, every=10):
    return [{"step": every * (i + 1), "accuracy": v} for i, v in enumerate(values)]


def test_at_chance_needs_consecutive_late_evaluations():
    stop = StopSettings(chance_evals=2, chance_margin=0.01, after_fraction=0.5)
    # 10 evaluations over 100 steps: only steps >= 50 count
    assert at_chance_reason(stop, rows([0.2] * 4), "accuracy", 0.2, 100) is None      # all early
    assert at_chance_reason(stop, rows([0.2] * 5), "accuracy", 0.2, 100) is None      # one late
    reason = at_chance_reason(stop, rows([0.2] * 6), "accuracy", 0.2, 100)
    assert reason and "2 evaluations" in reason
    # a recovery resets the streak; the margin is inclusive; NaN is not "at chance"
    assert at_chance_reason(stop, rows([0.5] * 5 + [0.21, 0.4, 0.2]), "accuracy", 0.2, 100) is None
    assert at_chance_reason(stop, rows([0.5] * 5 + [0.21, 0.21]), "accuracy", 0.2, 100)
    assert at_chance_reason(stop, rows([0.5] * 5 + [0.2101, 0.2101]), "accuracy", 0.2, 100) is None
    assert at_chance_reason(stop, rows([0.5] * 5 + [float("nan")] * 3), "accuracy", 0.2, 100) is None
    assert at_chance_reason(StopSettings(chance_evals=0), rows([0.2] * 10), "accuracy", 0.2, 100) is None


def test_empty_layer_counts_only_the_named_matrices():
    layers = [LayerStat("encoder.embeddings.word_embeddings.weight", (10, 4), 40, 0, 1.0, ()),
              LayerStat("encoder.layer.0.attention.self.query.weight", (4, 4), 16, 0, 1.0, ()),
              LayerStat("head.dense.weight", (4, 4), 16, 3, 13 / 16, ())]
    assert empty_layer_reason(StopSettings(), layers) is None
    only_query = StopSettings(empty_layers=(r"\.query\.",))
    assert empty_layer_reason(only_query, layers) == \
        "layer encoder.layer.0.attention.self.query.weight 100 % pruned"
    both = StopSettings(empty_layers=(r"word_embeddings", r"\.query\."))
    assert empty_layer_reason(both, layers).endswith("and 1 more 100 % pruned")
    assert empty_layer_reason(StopSettings(empty_layers=("^head",)), layers) is None


@pytest.mark.parametrize("settings, message", [
    (dict(chance_evals=-1), "presets.small.stop.chance_evals: must be >= 0, got -1"),
    (dict(after_fraction=1.5), "presets.small.stop.after_fraction: must be <= 1, got 1.5"),
    (dict(chance_margin=1.0), "presets.small.stop.chance_margin: must be < 1, got 1.0"),
    (dict(chance_evals=1.5), "presets.small.stop.chance_evals: expected an integer, got 1.5"),
    (dict(empty_layers=["("]), "presets.small.stop.empty_layers[0]: '(' is not a regular expression")])
def test_bad_stop_settings_are_one_line_errors(settings, message):
    from smctune.config.schema import StopBlock
    from smctune.config.validation import validate

    with pytest.raises(UserError) as err:
        validate(StopBlock, settings, "space.yaml", "presets.small.stop")
    assert str(err.value).startswith(f"space.yaml: {message}") and "\n" not in str(err.value)


def test_search_space_stop_block_is_validated(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(FAST_SPACE.replace("    resources: {cpu: 1}", "    resources: {cpu: 1}\n"
                                       "    stop: {chance_evals: 2, after_fraction: 2}"))
    with pytest.raises(UserError, match="after_fraction"):
        load_search_space("csqa", str(path))
    path.write_text(FAST_SPACE.replace("    resources: {cpu: 1}", "    resources: {cpu: 1}\n"
                                       "    stop: {chance_evalz: 2}"))
    with pytest.raises(UserError, match="chance_evalz"):
        load_search_space("csqa", str(path))


def test_pruned_trial_at_chance_stops_early_but_dense_never_does(space, tmp_path):
    always = StopSettings(chance_evals=1, chance_margin=0.99, after_fraction=0.0)  # everything "at chance"
    dense = dataclasses.replace(_spec(space, "dense", None, tmp_path), stop=always)
    reporter = CallbackReporter()
    Trial(dense, reporter, device="cpu").run()
    assert reporter.reports[-1]["step"] == dense.train.max_steps
    assert not any(r.get("collapsed") for r in reporter.reports)

    pruned = dataclasses.replace(_spec(space, "omp_before", 0.5, tmp_path), stop=always)
    reporter = CallbackReporter()
    Trial(pruned, reporter, device="cpu").run()
    last = reporter.reports[-1]
    assert last["step"] == pruned.train.eval_every < pruned.train.max_steps  # the first evaluation
    assert last["level_done"] is True and "at chance" in last["collapsed"]


def test_lth_stops_at_the_round_that_collapses(space, tmp_path):
    dense = _spec(space, "dense", None, tmp_path)
    Trial(dense, CallbackReporter(), device="cpu").run()
    late = StopSettings(chance_evals=1, chance_margin=0.99, after_fraction=1.0)  # the last evaluation
    lth = dataclasses.replace(_spec(space, "lth", 0.488, tmp_path, levels=(0.2, 0.36, 0.488)), stop=late)
    reporter = CallbackReporter()
    Trial(lth, reporter, device="cpu").run()
    done = [r for r in reporter.reports if r["level_done"]]
    assert len(done) == 1 and done[0]["round"] == 1 and "at chance" in done[0]["collapsed"]
    assert done[0]["step"] == lth.train.max_steps  # after_fraction 1.0: only the final evaluation counts


def test_a_named_empty_matrix_stops_the_trial(space, tmp_path):
    spec = _spec(space, "omp_before", 0.9999, tmp_path)
    reporter = CallbackReporter()
    Trial(dataclasses.replace(spec, stop=StopSettings(empty_layers=("nosuchlayer",))), reporter,
          device="cpu").run()
    assert reporter.reports[-1]["step"] == spec.train.max_steps and not reporter.reports[-1]["collapsed"]
    reporter = CallbackReporter()
    Trial(dataclasses.replace(spec, stop=StopSettings(empty_layers=(".",))), reporter, device="cpu").run()
    last = reporter.reports[-1]
    assert last["step"] == spec.train.eval_every and last["collapsed"].endswith("100 % pruned")


def test_diverged_pruned_trial_is_collapsed(space, tmp_path):
    spec = _spec(space, "omp_before", 0.5, tmp_path)
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, lr=1e12, max_steps=30,
                                                               warmup_steps=0))
    reporter = CallbackReporter()
    Trial(spec, reporter, device="cpu").run()
    assert reporter.reports[-1]["collapsed"] == LOSS_NOT_FINITE


def test_collapsed_trials_in_a_real_sweep(tmp_path, ray_session):
    from smctune.sweep.progress import ProgressPrinter
    from smctune.report.write import write_report
    from smctune.sweep.plan import plan_trials
    from smctune.sweep.run import run_sweep
    from smctune.tracking.tracker import MLflowTracker, default_tracking_uri

    text = FAST_SPACE.replace("    resources: {cpu: 1}", "    resources: {cpu: 1}\n"
                              "    stop: {chance_evals: 1, chance_margin: 0.99, after_fraction: 0.0}")
    space_file = tmp_path / "space.yaml"
    space_file.write_text(text)
    space = load_search_space("csqa", str(space_file))
    run_dir = tmp_path / "runs" / "c"
    run_dir.mkdir(parents=True)
    spec = SweepSpec(task="csqa", methods=("dense", "omp_before"), sparsities=(0.5,), seeds=(0,),
                     preset="smoke", preset_reason="test", name="c", run_dir=str(run_dir),
                     mlflow_uri=default_tracking_uri(run_dir), max_failures=0,
                     search_space_file=str(space_file), verbosity=0)
    (run_dir / "sweep.json").write_text(spec.to_json())

    def sweep():
        trials = plan_trials(spec, space)
        tracker = MLflowTracker(spec.mlflow_uri, "smctune/c", str(run_dir), {"sweep": "c", "git_sha": "t"})
        outcome = run_sweep(spec, space, trials, ProgressPrinter(len(trials), verbosity=0), tracker)
        tracker.end_sweep("FINISHED")  # what the CLI does after the report
        return outcome

    assert sweep().trials_run == 2
    records = {p.stem: json.loads(p.read_text()) for p in (run_dir / "results").glob("*.json")}
    assert records["dense-dense-seed0"]["status"] == "ok"
    collapsed = records["omp_before-s0.5000-seed0"]
    assert collapsed["status"] == "collapsed" and "at chance" in collapsed["collapse_reason"]
    assert collapsed["levels"][0]["collapsed"] and collapsed["levels"][0]["step"] == 4

    import mlflow

    mlflow.set_tracking_uri(spec.mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["smctune/c"])
    assert set(runs["status"]) == {"FINISHED"}
    assert runs.set_index("tags.method").loc["omp_before", "tags.collapsed"].startswith("accuracy at chance")

    again = sweep()  # a collapsed trial is a finished result: a rerun skips it
    assert again.trials_run == 0 and again.trials_skipped == 2

    paths = write_report(run_dir)
    assert "†" in paths.table and "1 collapsed" in paths.table
    data = json.loads(Path(paths.results_json).read_text())
    assert data["trials"]["collapsed"] == 1
    assert data["methods"]["omp_before"]["levels"]["0.5"]["status_counts"] == {"collapsed": 1}
    assert data["methods"]["omp_before"]["levels"]["0.5"]["mean"] is not None
