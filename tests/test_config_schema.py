"""The search-space schema (``smctune.config.schema``): every key of the file checked once, with
one-line errors that name the key, its place and the valid choices; and ``extends:``."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import yaml

from smctune.catalog.registry import TASKS
from smctune.config.search_space import load_search_space
from smctune.config.specs import TrialSpec
from smctune.errors import UserError

BASE = {"task": "csqa", "presets": {"smoke": {}}}


def write(tmp_path, data, name="space.yaml") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return str(path)


def error_of(tmp_path, data, name="space.yaml") -> str:
    path = write(tmp_path, data, name)
    with pytest.raises(UserError) as info:
        load_search_space("csqa", path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(path), message
    return message[len(path):]


def with_smoke(**smoke) -> dict:
    return {"task": "csqa", "presets": {"smoke": smoke}}


# ---------------------------------------------------------------------------------- unknown keys

@pytest.mark.parametrize("data, expected", [
    (with_smoke(train={"eval_evry": 5}),
     ": unknown key 'eval_evry' at presets.smoke.train (valid: max_steps, eval_every, batch_size, "),
    ({**BASE, "grid": [0.5]}, ": unknown key 'grid' at the top level (valid: task, sparsities, methods, "),
    ({"task": "csqa", "presets": {"huge": {}}}, ": unknown key 'huge' at presets (valid: paper, small, smoke)"),
    (with_smoke(resources={"gpus": 1}), ": unknown key 'gpus' at presets.smoke.resources (valid: cpu, gpu, memory_gb)"),
    (with_smoke(stop={"chance_evalz": 2}), ": unknown key 'chance_evalz' at presets.smoke.stop (valid: chance_evals, "),
    (with_smoke(search={"methods": {"gmp": {"frequency": {"low": 1, "hi": 9}}}}),
     ": unknown key 'hi' at presets.smoke.search.methods.gmp.frequency (valid: low, high, log, choices)"),
    ({**BASE, "prunable": {"groups": {"head": ["^head"]}, "exclud": []}},
     ": unknown key 'exclud' at prunable (valid: include, exclude, groups, smcbench_exclude)"),
    ({**BASE, "sparsities": {"paper": 3}}, ": unknown key 'paper' at sparsities (valid: paper_k)"),
    ({**BASE, "models": {"big": {"smoke": {"model": {"arch": "x"}}}}},
     ": unknown key 'arch' at models.big.smoke.model (valid: source, name, config)"),
])
def test_unknown_key_names_its_place_and_the_valid_keys(tmp_path, data, expected):
    assert error_of(tmp_path, data).startswith(expected)


def test_catalog_names_are_checked_when_the_file_is_read(tmp_path):
    assert error_of(tmp_path, {**with_smoke(methods={"gpm": {"frequency": 4}})}).startswith(
        ": unknown method 'gpm' at presets.smoke.methods (valid: dense, ")
    assert error_of(tmp_path, {**BASE, "methods": {"gmp": {"freq": 4}}}) == (
        ": unknown key 'freq' at methods.gmp (valid: end_fraction, frequency, optimizer_state, schedule, "
        "start_fraction)")
    assert error_of(tmp_path, {**BASE, "methods": {"gmp": {"frequency": 0}}}) == (
        ": methods.gmp.frequency = 0 is not valid (valid: a whole number in [1, inf])")
    assert error_of(tmp_path, with_smoke(search={"methods": {"gmp": {"frequency": {"low": 0, "high": 9}}}})) \
        .startswith(": presets.smoke.search.methods.gmp.frequency.low = 0 is not valid")
    assert error_of(tmp_path, with_smoke(search={"methods": {"lth": {"rate": {"low": 0.1, "high": 0.3}}}})) \
        .startswith(": presets.smoke.search.methods.lth.rate cannot be searched")


# ---------------------------------------------------------------------------------- types

@pytest.mark.parametrize("data, expected", [
    (with_smoke(train={"max_steps": 1.5}), ": presets.smoke.train.max_steps: expected an integer, got 1.5"),
    (with_smoke(train={"max_steps": "3"}), ": presets.smoke.train.max_steps: expected an integer, got '3'"),
    (with_smoke(train={"max_steps": True}), ": presets.smoke.train.max_steps: expected an integer, got True"),
    (with_smoke(train={"lr": "fast"}), ": presets.smoke.train.lr: expected a number, got 'fast'"),
    (with_smoke(train={"lr": float("nan")}), ": presets.smoke.train.lr: expected a finite number, got nan"),
    (with_smoke(model={"name": 3}), ": presets.smoke.model.name: expected a string, got 3"),
    (with_smoke(model={"config": [1]}), ": presets.smoke.model.config: expected a mapping, got [1]"),
    (with_smoke(train=[1, 2]), ": presets.smoke.train: expected a mapping, got [1, 2]"),
    (with_smoke(train={"freeze": "head"}), ": presets.smoke.train.freeze: expected a list, got 'head'"),
    (with_smoke(search={"methods": {"gmp": {"start_fraction": {"low": 0.1, "high": 0.2, "log": 1}}}}),
     ": presets.smoke.search.methods.gmp.start_fraction.log: expected true or false, got 1"),
    (with_smoke(search={"trials_per_cell": "2"}), ": presets.smoke.search.trials_per_cell: expected an integer"),
    ({**BASE, "prunable": {"include": ["("]}}, ": prunable.include[0]: '(' is not a regular expression"),
    ({**BASE, "sparsities": [0.5, 1.5]}, ": sparsities: sparsity 1.5 is outside (0, 1)"),
    ({**BASE, "sparsities": [0.5, True]}, ": sparsities: sparsity True is outside (0, 1)"),
    ({**BASE, "sparsities": {"paper_k": 11}}, ": sparsities.paper_k: expected an integer in 1..10, got 11"),
    ({**BASE, "sparsities": "paper"}, ": sparsities: expected a list or {paper_k: N}, got 'paper'"),
    ("- a\n- b\n", ": expected a mapping at the top level"),
])
def test_yaml_types_are_not_coerced(tmp_path, data, expected):
    assert error_of(tmp_path, data).startswith(expected)


def test_numbers_become_the_dataclass_types_so_ids_stay_stable(tmp_path):
    space = load_search_space("csqa", write(tmp_path, with_smoke(train={"lr": 1, "freeze": ["head"]},
                                                                 resources={"cpu": 2})))
    train = space.preset("smoke").train
    assert train.lr == 1.0 and isinstance(train.lr, float) and train.freeze == ("head",)
    assert space.preset("smoke").resources.cpu == 2.0 and isinstance(space.preset("smoke").resources.cpu, float)
    assert load_search_space("csqa").sparsities == (0.2, 0.36, 0.488, 0.5904, 0.67232, 0.737856, 0.790285,
                                                    0.832228)


def test_trial_spec_round_trips_through_json():
    import json

    from smctune.config.settings import ModelSettings, StopSettings, TrainSettings

    spec = TrialSpec(task="csqa", method="lth", sparsity=0.36, seed=1, preset="smoke",
                     model=ModelSettings(config={"a": [1]}), train=TrainSettings(freeze=("head",)),
                     tunables={"rate": 0.2}, prunable={"include": ["x"]}, data_dir=None, cache_root="/c",
                     levels=(0.2, 0.36), stop=StopSettings(empty_layers=("^e",)))
    again = TrialSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.trial_id == spec.trial_id and hash(again.train) == hash(spec.train)


# ---------------------------------------------------------------------------------- ranges

@pytest.mark.parametrize("stop, expected", [
    ({"chance_evals": -1}, "presets.smoke.stop.chance_evals: must be >= 0, got -1"),
    ({"after_fraction": 1.5}, "presets.smoke.stop.after_fraction: must be <= 1, got 1.5"),
    ({"after_fraction": -0.1}, "presets.smoke.stop.after_fraction: must be >= 0, got -0.1"),
    ({"chance_margin": 1}, "presets.smoke.stop.chance_margin: must be < 1, got 1"),
    ({"empty_layers": ["ok", "(x"]}, "presets.smoke.stop.empty_layers[1]: '(x' is not a regular expression"),
    ({"empty_layers": "^e"}, "presets.smoke.stop.empty_layers: expected a list, got '^e'"),
])
def test_stop_ranges(tmp_path, stop, expected):
    assert error_of(tmp_path, with_smoke(stop=stop)).startswith(": " + expected)


def test_stop_block_is_read():
    stop = load_search_space("csqa").preset("paper").stop
    assert (stop.chance_evals, stop.after_fraction) == (2, 0.5)
    assert stop.empty_layers == (r"^encoder\.embeddings\.word_embeddings\.",)


@pytest.mark.parametrize("param, expected", [
    ({"low": 9, "high": 1}, "frequency: low 9 must be below high 1"),
    ({"low": 1}, "frequency: 'high' is required for a range"),
    ({"low": 1, "high": 9, "choices": [1]}, "frequency: give either choices or low/high, not both"),
    ({"choices": []}, "frequency.choices: expected a non-empty list"),
    ({"choices": [2, 2]}, "frequency.choices: [2, 2] lists a value twice"),
    ({"low": "a", "high": 9}, "frequency.low: expected a number, got 'a'"),
])
def test_search_ranges_and_choices(tmp_path, param, expected):
    data = {**BASE, "search": {"methods": {"gmp": {"frequency": param}}}}
    assert error_of(tmp_path, data).startswith(": search.methods.gmp." + expected)


@pytest.mark.parametrize("data, expected", [
    ({**BASE, "search": {"trials_per_cell": 0}}, ": search.trials_per_cell: must be >= 1, got 0"),
    ({**BASE, "search": {"metric": "loss"}}, ": search.metric: 'loss' is not valid (valid: best, final)"),
    ({**BASE, "step_seconds": {"smoke": {"cpu": 0}}},
     ": step_seconds.smoke.cpu.step: expected a number of seconds > 0, got 0.0"),
    ({**BASE, "step_seconds": {"smoke": {}}}, ": step_seconds.smoke: must have at least 1 entry, got {}"),
    ({**BASE, "models": {}}, ": models: expected a mapping of architecture names to preset overrides"),
    ({**BASE, "models": {"big": {"paper": {}}}}, ": unknown key 'paper' at models.big (valid: smoke)"),
    (with_smoke(resources={"gpu": -1}), ": presets.smoke.resources.gpu: must be >= 0, got -1"),
    (with_smoke(train={"eval_every": 0}), ": presets.smoke.train.eval_every: must be >= 1, got 0"),
    ({"task": "winogrande", "presets": {}}, ": is for task 'winogrande', not 'csqa'"),
])
def test_ranges_and_cross_field_rules(tmp_path, data, expected):
    assert error_of(tmp_path, data).startswith(expected)


def test_every_packaged_search_space_loads():
    for task in TASKS:
        space = load_search_space(task)
        assert space.task == task and space.source == f"search_spaces/{task}.yaml"
        for preset in space.presets:
            space.search_decl(preset)


# ---------------------------------------------------------------------------------- extends:

def test_extends_merges_mappings_and_replaces_the_rest(tmp_path):
    write(tmp_path, {"task": "base-task", "sparsities": [0.2, 0.5],
                     "presets": {"smoke": {"train": {"max_steps": 10, "eval_every": 5},
                                           "stop": {"empty_layers": ["a", "b"]}},
                                 "small": {"train": {"max_steps": 99}}},
                     "search": {"trials_per_cell": 2,
                                "methods": {"gmp": {"frequency": {"choices": [1, 2]}}}}}, "base.yaml")
    path = write(tmp_path, {"extends": "base.yaml",
                            "presets": {"smoke": {"train": {"max_steps": 20},
                                                  "stop": {"empty_layers": ["c"]}},
                                        "small": None},
                            "search": {"methods": {"gmp": {"frequency": {"choices": [4]}}}}})
    space = load_search_space("csqa", path)       # task: is not inherited
    smoke = space.preset("smoke")
    assert (smoke.train.max_steps, smoke.train.eval_every) == (20, 5)     # mappings merge
    assert smoke.stop.empty_layers == ("c",)                               # lists are replaced
    assert space.preset("small").train.max_steps == 100                    # null replaces: the defaults
    assert space.sparsities == (0.2, 0.5)
    assert space.search == {"trials_per_cell": 2, "methods": {"gmp": {"frequency": {"choices": [4]}}}}
    assert space.source == path


def test_a_user_file_may_extend_a_packaged_one(tmp_path):
    path = write(tmp_path, {"task": "csqa", "extends": "csqa.yaml",
                            "presets": {"smoke": {"train": {"max_steps": 7}}}}, "mine.yaml")
    mine, packaged = load_search_space("csqa", path), load_search_space("csqa")
    assert mine.preset("smoke").train == dataclasses.replace(packaged.preset("smoke").train, max_steps=7)
    assert mine.preset("paper") == packaged.preset("paper") and mine.methods == packaged.methods


def test_packaged_families_share_a_base():
    assert load_search_space("mt-10to10").presets == load_search_space("mt-2to2").presets
    assert load_search_space("mt-5to5").preset("paper").train.batch_size == 32
    assert load_search_space("race-h").preset("paper").train.max_steps == 11706
    assert load_search_space("race-h").preset("small").model == load_search_space("race-m").preset("small").model


def test_extends_errors_are_one_line_with_the_chain(tmp_path):
    write(tmp_path, {"extends": "b.yaml"}, "a.yaml")
    write(tmp_path, {"extends": "space.yaml"}, "b.yaml")
    assert error_of(tmp_path, {"task": "csqa", "extends": "a.yaml"}) == \
        ": extends: a cycle (space.yaml -> a.yaml -> b.yaml -> space.yaml)"
    message = error_of(tmp_path, {"task": "csqa", "extends": "nosuch.yaml"})
    assert message.startswith(": extends: no file 'nosuch.yaml' (chain: space.yaml -> nosuch.yaml; valid: ")
    assert "a.yaml" in message and "csqa.yaml" in message
    assert error_of(tmp_path, {"task": "csqa", "extends": "space.yaml"}) == \
        ": extends: a cycle (space.yaml -> space.yaml)"
    assert error_of(tmp_path, {"task": "csqa", "extends": 3}).startswith(
        ": extends: expected the name of a file in the same directory, got 3")


@pytest.mark.parametrize("name", ["../outside.yaml", "/etc/outside.yaml", "sub/inner.yaml", ".."])
def test_extends_reads_nothing_outside_the_directory(tmp_path, name):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", dict(BASE), "inner.yaml")
    write(tmp_path, dict(BASE), "outside.yaml")
    inner = tmp_path / "dir"
    inner.mkdir()
    path = write(inner, {"task": "csqa", "extends": name})
    with pytest.raises(UserError, match="expected the name of a file in the same directory") as info:
        load_search_space("csqa", path)
    assert "\n" not in str(info.value)


def test_extends_refuses_a_link_that_leads_outside(tmp_path):
    write(tmp_path, dict(BASE), "outside.yaml")
    inner = tmp_path / "dir"
    inner.mkdir()
    os.symlink(tmp_path / "outside.yaml", inner / "linked.yaml")
    assert "resolves outside" in error_of(inner, {"task": "csqa", "extends": "linked.yaml"})


def test_invalid_yaml_in_a_base_names_that_file(tmp_path):
    write(tmp_path, "presets: [unclosed\n", "base.yaml")
    path = write(tmp_path, {"task": "csqa", "extends": "base.yaml"})
    with pytest.raises(UserError, match=r"base\.yaml line \d+: invalid YAML"):
        load_search_space("csqa", path)


def test_an_error_says_which_files_the_keys_came_from(tmp_path):
    write(tmp_path, with_smoke(train={"eval_evry": 2}), "base.yaml")
    assert error_of(tmp_path, {"task": "csqa", "extends": "base.yaml"}).startswith(
        " (extends base.yaml): unknown key 'eval_evry' at presets.smoke.train")


# ---------------------------------------------------------------------------------- import cost

def test_only_the_loader_imports_pydantic():
    code = ("import sys\n"
            "import smctune.config.specs, smctune.config.settings, smctune.config.search_space\n"
            "import smctune.config.search_decl, smctune.config.values, smctune.config.extends\n"
            "assert 'pydantic' not in sys.modules, 'pydantic imported'\n"
            "from smctune.config.search_space import load_search_space\n"
            "load_search_space('csqa')\n"
            "assert 'pydantic' in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
