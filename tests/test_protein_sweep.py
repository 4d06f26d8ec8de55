"""Protein sweeps: every protein task on a ``--data-dir`` in each layout a user's data may have (built
here from the bundled ThermoProt files) as planned trials run in this process, one of them as a sweep
under real Ray Tune, the bundled task with every paper method through the CLI, and the
module-sensitivity command.

The labels are the bundled sequences' real classes, renumbered the way each data set numbers them
(HotProtein's five classes 0..4, Meltome's 2..4 with SMC-Bench's offset, hot/cold, melting
temperatures standing in for each class).
"""
from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import joined, last_reports
from smctune.config.specs import SweepSpec
from smctune.config.search_space import load_search_space
from smctune.sweep.progress import ProgressPrinter
from smctune.catalog.registry import PAPER_METHODS
from smctune.sweep.plan import plan_trials
from smctune.sweep.run import run_sweep
from smctune.tracking.tracker import MLflowTracker, default_tracking_uri
from smctune.trainables.protein import data, fasta

SMCTUNE = str(Path(sys.executable).with_name("smctune"))
BUNDLED = Path(data.__file__).parent / "data" / "thermo"
THERMOPROT = ("psychrophilic", "mesophilic", "thermophilic", "hyperthermophilic")
PER_CLASS = {"train": 24, "dev": 8}

# how each task numbers a ThermoProt class (None: the class is not part of the task)
HOTPROTEIN_FIVE = {"psychrophilic": 1, "mesophilic": 2, "thermophilic": 3, "hyperthermophilic": 4}
HOT_COLD = {"psychrophilic": "cold", "mesophilic": "cold", "thermophilic": "hot", "hyperthermophilic": "hot"}
MELTOME_OFFSET = {"mesophilic": 2, "thermophilic": 3, "hyperthermophilic": 4}     # SMC-Bench's --label-offset 2
MELTOME_TM = {"mesophilic": 48.5, "thermophilic": 61.0, "hyperthermophilic": 77.5}  # binned at 55 / 70


def proteins(split: str, labels: dict) -> list[tuple[str, str, object]]:
    """(name, sequence, label) for the first bundled records of every class the task has."""
    rows = []
    for name in THERMOPROT:
        if name not in labels:
            continue
        for record in fasta.read_fasta(BUNDLED / split / f"{name}.fasta")[:PER_CLASS[split]]:
            rows.append((f"{name}_{record.header.split()[-1]}", record.sequence, labels[name]))
    return rows


def split_pickle(directory: Path, labels: dict) -> None:
    """HotProtein / SMC-Bench: the split file and one FASTA file per protein in fasta/."""
    split = {}
    for ours, theirs in (("train", "train"), ("dev", "test")):
        rows = proteins(ours, labels)
        split[f"{theirs}_names"] = [name for name, _, _ in rows]
        split[f"{theirs}_labels"] = [float(label) for _, _, label in rows]   # SMC-Bench casts to float
        for name, sequence, _ in rows:
            path = directory / "fasta" / f"{name}.fasta"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f">{name}\n{sequence[:60]}\n{sequence[60:]}\n")
    (directory / "hotprotein_split.pkl").write_bytes(pickle.dumps(split, protocol=4))


def csv_files(directory: Path, labels: dict, column: str = "label") -> None:
    for ours, file in (("train", "train.csv"), ("dev", "test.csv")):
        with open(directory / file, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["real_seq", column])
            writer.writerows([sequence, label] for _, sequence, label in proteins(ours, labels))


def flip_csv(directory: Path, labels: dict) -> None:
    with open(directory / "mixed_split.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sequence", "target", "set", "validation"])
        for ours, which in (("train", "train"), ("dev", "test")):
            for index, (_, sequence, label) in enumerate(proteins(ours, labels)):
                writer.writerow([sequence, label, which, "True" if which == "train" and index % 10 == 0 else ""])


def class_fasta(directory: Path, labels: dict) -> None:
    """One FASTA file per class (HotProtein's class names) in train/ and dev/."""
    names = {1: "psychrophilic", 2: "mesophilic", 3: "thermophilic", 4: "hyperthermophilic"}
    for split in ("train", "dev"):
        for name in THERMOPROT:
            rows = [(n, s) for n, s, label in proteins(split, labels) if names.get(label) == name]
            path = directory / split / f"{name}.fasta"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f">{n}\n{s}\n" for n, s in rows))


CASES = [   # task, layout writer, labels, what the data check must say
    ("hp-s", split_pickle, HOTPROTEIN_FIVE, "split-pickle"),
    ("hp-s2c5", class_fasta, HOTPROTEIN_FIVE, "class-fasta"),
    ("hp-s2c2", csv_files, HOT_COLD, "csv"),
    ("meltome", split_pickle, MELTOME_OFFSET, "split-pickle"),
    ("meltome", lambda d, labels: csv_files(d, labels, "tm"), MELTOME_TM, "csv"),
    ("meltome", flip_csv, MELTOME_TM, "flip-csv"),
]


@pytest.mark.parametrize("task, write, labels, layout", CASES,
                         ids=[f"{task}-{layout}-{i}" for i, (task, _, _, layout) in enumerate(CASES)])
def test_every_task_trains_on_a_data_dir_in_each_layout(tmp_path, task, write, labels, layout, single_thread):
    """Every task and layout through the planned trials, run in this process in stage order (the
    layout is read by the trial, not by Ray: the Ray sweep on a data dir is the test below)."""
    directory = tmp_path / "data"
    directory.mkdir()
    write(directory, labels)
    data.clear_cache()
    loaded = data.load(task, str(directory))
    assert loaded.layout == layout
    classes = {p.label for p in loaded.splits["train"]}
    assert len(classes) >= 2
    spec = _spec(task, tmp_path, directory, len(loaded.splits["train"]))
    trials = sorted(plan_trials(spec, load_search_space(task)), key=lambda t: t.method != "dense")
    assert [t.method for t in trials] == ["dense", "omp_after", "snip_rigl"]
    for trial, last in zip(trials, last_reports(trials)):
        assert last["level_done"] and 0.0 <= last["best"] <= 1.0, (trial.method, last)
        if trial.method != "dense":
            assert last["sparsity"] == pytest.approx(0.36, abs=1e-4)   # an exact count


def test_a_sweep_on_a_data_dir(tmp_path, ray_session):
    """One layout under real Ray Tune: the workers read the user's directory and the records say so.
    Two stage-1 methods: one Tuner (stage 2 reads the directory the same way; the case above runs it)."""
    task, write, labels, _ = CASES[0]
    directory = tmp_path / "data"
    directory.mkdir()
    write(directory, labels)
    data.clear_cache()
    spec = _spec(task, tmp_path, directory, len(data.load(task, str(directory)).splits["train"]),
                 methods=("dense", "snip_rigl"))
    run_dir = Path(spec.run_dir)
    (run_dir / "sweep.json").write_text(spec.to_json())
    space = load_search_space(task)
    trials = plan_trials(spec, space)
    tracker = MLflowTracker(spec.mlflow_uri, f"smctune/{task}", str(run_dir), {"sweep": task, "git_sha": "t"})
    outcome = run_sweep(spec, space, trials, ProgressPrinter(len(trials), verbosity=0), tracker)
    tracker.end_sweep("FINISHED")
    records = [json.loads(p.read_text()) for p in (run_dir / "results").glob("*.json")]
    assert outcome.trials_run == len(trials) == 2
    assert sorted(r["status"] for r in records) == ["ok"] * 2, [r.get("error") for r in records]
    for record in records:
        assert 0.0 <= record["levels"][-1]["best"] <= 1.0
        if record["method"] != "dense":
            assert record["levels"][-1]["achieved_sparsity"] == pytest.approx(0.36, abs=1e-4)   # exact count


def _spec(task: str, tmp_path: Path, directory: Path, train_examples: int,
          methods=("dense", "omp_after", "snip_rigl")) -> SweepSpec:
    run_dir = tmp_path / "runs" / task
    run_dir.mkdir(parents=True)
    return SweepSpec(task=task, methods=methods, sparsities=(0.36,), seeds=(0,),
                     preset="smoke", preset_reason="test", name=task, run_dir=str(run_dir),
                     mlflow_uri=default_tracking_uri(run_dir), data_dir=str(directory), models=("esm1b",),
                     verbosity=0, train_examples=train_examples)


def test_cli_sweep_thermo_every_paper_method(tmp_path, ray_address):
    """The bundled task through the CLI with --methods all (two levels keep it short)."""
    result = subprocess.run([SMCTUNE, "sweep", "thermo", "--methods", "all", "--preset", "smoke",
                             "--sparsities", "0.2,0.36", "--storage", str(tmp_path), "--name", "all", "-q"],
                            capture_output=True, text=True, timeout=900, env=joined(os.environ, ray_address))
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "all" / "results").glob("*.json")]
    one_level = [m for m in PAPER_METHODS if m != "lth"]
    assert len(records) == 1 + 2 * len(one_level) + 1   # dense, the one-level methods x 2, one LTH ladder
    assert {r["status"] for r in records} == {"ok"}
    assert "thermo · model esm1b" in result.stdout and "fails at" in result.stdout
    dense = next(r for r in records if r["method"] == "dense")
    assert 0.25 <= dense["levels"][0]["best"] < 0.9   # four balanced classes: no single-class subset


def test_cli_module_sensitivity_prints_one_row_per_group(tmp_path, ray_address):
    result = subprocess.run([SMCTUNE, "sweep", "thermo-hotcold", "--methods", "dense,omp_after", "--preset",
                             "smoke", "--sparsities", "0.05", "--prune-only", "q,k,v,o,ffn",
                             "--storage", str(tmp_path), "--name", "sens"],
                            capture_output=True, text=True, timeout=600, env=joined(os.environ, ray_address))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "module sensitivity" in result.stdout
    rows = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("omp_after[")]
    assert rows == [f"omp_after[{g}]" for g in ("q", "k", "v", "o", "ffn")]
    assert "data: sequences cropped to 64 residues" in result.stdout
