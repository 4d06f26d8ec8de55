"""The report's figures drawn by helper processes: same files as drawn here, and anything a helper
cannot do is drawn here instead."""
import pytest

from smctune import figures
from smctune.errors import UserError
from smctune.figure_batch import FigureBatch, _split

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


def test_helpers_draw_the_same_files_as_this_process(tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    local = FigureBatch(helpers=0).start()
    expected = _add_heatmaps(local, here, 6)
    assert local.run() == expected
    batch = FigureBatch(helpers=1).start()
    paths = _add_heatmaps(batch, there, 6)
    assert batch.run() == paths
    for mine, theirs in zip(expected, paths):
        assert theirs.is_file() and theirs.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert theirs.stat().st_size == pytest.approx(mine.stat().st_size, rel=0.05)


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


def test_an_unwritable_output_directory_is_the_users_error_from_a_helper_too(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    batch = FigureBatch(helpers=1).start()
    _add_heatmaps(batch, blocked / "out", 4)
    with pytest.raises(UserError, match="cannot write"):
        batch.run()


def test_shares_cover_every_figure_once():
    jobs = list(range(11))
    mine, theirs = _split(jobs, 1)
    assert mine == list(range(5)) and theirs == [list(range(5, 11))]
    mine, theirs = _split(jobs, 3)
    assert sorted(mine + [j for share in theirs for j in share]) == jobs
    assert _split(jobs, 0) == (jobs, [])


def test_the_helper_really_draws_its_share(tmp_path, monkeypatch):
    """Not a silent fallback: the helper's figures are not drawn in this process."""
    from smctune import figure_batch

    drawn_here = []
    original = figure_batch.FigureJob.run
    monkeypatch.setattr(figure_batch.FigureJob, "run", lambda job: (drawn_here.append(job.path), original(job))[1])
    batch = FigureBatch(helpers=1).start()
    paths = _add_heatmaps(batch, tmp_path, 6)
    batch.run()
    assert all(p.is_file() for p in paths)
    assert drawn_here == paths[:3]
