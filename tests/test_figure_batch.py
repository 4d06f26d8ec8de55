"""The report's figures drawn by helper processes: the same files as drawn here, shared out one at a
time, and anything a helper cannot do (a figure that does not pickle, a helper that dies or hangs) is
drawn here instead."""
import os
import pickle
import time

import pytest

from smctune import figure_batch, figures
from smctune.errors import UserError
from smctune.figure_batch import FigureBatch

LEVELS = (0.2, 0.5, 0.8)


def _add_heatmaps(batch, out, count):
    paths = []
    for i in range(count):
        values = {(m, s): 0.5 + 0.01 * i - 0.1 * s for m in ("gmp", "snip") for s in LEVELS}
        failing = {(m, s): s > 0.6 for m in ("gmp", "snip") for s in LEVELS}
        path = out / f"heatmap-{i}.png"
        paths.append(batch.add(path, figures.plot_heatmap, ["gmp", "snip"], LEVELS, values, failing, path,
                               f"figure {i}", "accuracy (%)"))
    return paths


def _is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _count_draws_here(monkeypatch, delay: float = 0.0) -> list:
    """Record (and optionally slow down) the figures drawn in this process; helpers are unaffected."""
    drawn_here = []
    original = figure_batch.FigureJob.run

    def run(job):
        drawn_here.append(job.path)
        time.sleep(delay)
        return original(job)
    monkeypatch.setattr(figure_batch.FigureJob, "run", run)
    return drawn_here


def _wait_for_a_helper(batch, timeout: float = 60.0) -> None:
    """Until a helper has taken a figure (it is ready: its imports are done), so the test exercises
    the helper and not this process drawing everything while the helper still imports."""
    deadline = time.monotonic() + timeout
    def taken() -> bool:   # white-box: the batch's own queue
        return len(batch._pending) < len(batch._jobs)
    while not taken() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert taken(), "the figure helper never took a figure"


def test_helpers_draw_the_same_files_as_this_process(tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    local = FigureBatch(helpers=0).start()
    expected = _add_heatmaps(local, here, 6)
    assert local.run() == expected
    batch = FigureBatch(helpers=1).start()
    paths = _add_heatmaps(batch, there, 6)
    assert batch.run() == paths                         # every path, in the order added
    for mine, theirs in zip(expected, paths):
        assert _is_png(theirs)
        assert theirs.stat().st_size == pytest.approx(mine.stat().st_size, rel=0.05)


def test_figures_are_shared_one_at_a_time(tmp_path, monkeypatch):
    """A busy process leaves the figures to its helper: the helper takes each as it is queued, and
    this process only draws what is still waiting when it calls ``run``."""
    drawn_here = _count_draws_here(monkeypatch, delay=0.4)
    batch = FigureBatch(helpers=1).start()
    paths = _add_heatmaps(batch, tmp_path, 8)
    _wait_for_a_helper(batch)
    batch.run()
    assert all(_is_png(p) for p in paths)
    assert len(drawn_here) <= 6                         # the helper drew some (it really did: below)
    assert len(set(drawn_here)) == len(drawn_here)      # nothing drawn twice
    for path in set(paths) - set(drawn_here):
        assert _is_png(path)


def _not_picklable_draw(path):
    path.write_bytes(b"drawn here")


def test_a_figure_the_helper_cannot_take_is_drawn_here(tmp_path):
    batch = FigureBatch(helpers=1).start()
    paths = _add_heatmaps(batch, tmp_path, 4)
    local_only = tmp_path / "lambda.png"
    batch.add(local_only, lambda path: _not_picklable_draw(path), local_only)   # a lambda does not pickle
    batch.add(tmp_path / "late.png", _not_picklable_draw, tmp_path / "late.png")
    batch.run()
    assert all(p.is_file() for p in paths)
    assert local_only.read_bytes() == b"drawn here" and (tmp_path / "late.png").is_file()


def _die_in_helper(path, parent: int):
    if os.getpid() != parent:
        os._exit(3)
    path.write_bytes(b"drawn by the parent")


def _hang_in_helper(path, parent: int):
    if os.getpid() != parent:
        time.sleep(600)
    path.write_bytes(b"drawn by the parent")


@pytest.mark.parametrize("draw", [_die_in_helper, _hang_in_helper], ids=["dies", "hangs"])
def test_a_helper_that_dies_or_hangs_costs_nothing_but_time(tmp_path, monkeypatch, draw):
    monkeypatch.setattr(figure_batch, "HELPER_SECONDS", 2)
    monkeypatch.setattr(figure_batch, "HELPER_SECONDS_PER_FIGURE", 0)
    batch = FigureBatch(helpers=1).start()
    deadly = [batch.add(tmp_path / f"d{i}.png", draw, tmp_path / f"d{i}.png", os.getpid()) for i in range(3)]
    _wait_for_a_helper(batch)
    started = time.monotonic()
    batch.run()
    assert time.monotonic() - started < 30
    assert all(p.read_bytes() == b"drawn by the parent" for p in deadly)


def test_an_unwritable_output_directory_is_the_users_error_from_a_helper_too(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    batch = FigureBatch(helpers=1).start()
    _add_heatmaps(batch, blocked / "out", 4)
    with pytest.raises(UserError, match="cannot write"):
        batch.run()


def test_a_pickled_batch_draws_here(tmp_path, monkeypatch):
    """Tune pickles the sweep's callbacks, which hold the batch: the copy must not own helpers."""
    batch = FigureBatch(helpers=1).start()
    try:
        copy = pickle.loads(pickle.dumps(batch))
        drawn_here = _count_draws_here(monkeypatch)
        paths = _add_heatmaps(copy, tmp_path, 2)
        assert copy.run() == paths == drawn_here
    finally:
        batch.close()
