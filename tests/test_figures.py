"""The report's extra figures: each writes a readable PNG, copes with missing data, and carries its
information in text and patterns (not colour alone)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smctune.errors import UserError
from smctune.report.figures import layerwise, style
from smctune.report.figures.layerwise import plot_layerwise, short_layer_name
from smctune.report.figures.matrices import plot_heatmap, plot_similarity
from smctune.report.figures.style import save_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LONG_NAME = "magnitude pruning after fine-tuning with lottery-ticket rewinding to iteration zero"

# Glyph-missing warnings would mean ✗ or — print as boxes; make them fail the drawing tests.
pytestmark = pytest.mark.filterwarnings("error")


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 0 and pixels.shape[1] > 0


@pytest.fixture
def drawn(monkeypatch):
    """The figures as saved, to check what they show; they are still written to disk."""
    saved = []
    real = style.save_figure

    def keep(fig, path):
        saved.append(fig)
        return real(fig, path)

    monkeypatch.setattr(style, "save_figure", keep)
    return saved


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def tick_labels(fig, axis: str = "x") -> list[str]:
    ax = fig.axes[0]
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [label.get_text() for label in labels]


# --------------------------------------------------------------------------------------------------
# layer names

@pytest.mark.parametrize("name, short", [
    ("encoder.layer.3.attention.self.query.weight", "L3 q"),
    ("roberta.encoder.layer.11.attention.output.dense.weight", "L11 attn out"),
    ("encoder.layer.0.intermediate.dense.weight", "L0 ffn in"),
    ("encoder.layer.0.output.dense.weight", "L0 ffn out"),
    ("encoder.embeddings.word_embeddings.weight", "word emb"),
    ("model.layers.7.self_attn.q_proj.weight", "L7 q"),
    ("model.layers.7.mlp.down_proj.weight", "L7 down"),
    ("encoder.rnn.weight_ih_l0", "rnn ih l0"),
    ("encoder.rnn.weight_hh_l1_reverse", "rnn hh l1 rev"),
    ("encoder.layer.2.attention.self.key.bias", "L2 k bias"),
    ("decoder.predict.attn.weight", "decoder.predict.attn"),
    ("classifier.out_proj", "classifier.out_proj"),
    ("fc", "fc"),
    ("weight", "weight"),
    ("encoder", "encoder"),
])
def test_short_layer_name(name, short):
    assert short_layer_name(name) == short


def test_colliding_short_names_fall_back_to_full_names():
    layers = ["model.layer.0.attention.self.query.weight", "layer.0.attention.self.query.weight",
              "layer.1.attention.self.query.weight"]
    assert layerwise._tick_labels(layers) == layers[:2] + ["L1 q"]


# --------------------------------------------------------------------------------------------------
# layerwise

def bert_layers(n: int) -> list[str]:
    return [f"encoder.layer.{i}.attention.self.{part}.weight" for i in range(n)
            for part in ("query", "key", "value")]


def test_layerwise_writes_png_with_short_labels_and_marks_empty_layers(tmp_path, drawn):
    layers = bert_layers(4)
    profiles = {"magnitude": {layer: 0.5 + 0.04 * i for i, layer in enumerate(layers)},
                "snip": {layer: (1.0 if i == 2 else 0.7) for i, layer in enumerate(layers)}}
    path = plot_layerwise(profiles, 0.7, tmp_path / "out" / "layers.png", "sparsity 0.700")
    assert path == tmp_path / "out" / "layers.png"
    assert_png(path)
    (fig,) = drawn
    assert tick_labels(fig)[:3] == ["L0 q", "L0 k", "L0 v"]
    assert texts(fig) == ["empty"]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "target sparsity 0.700" in legend and "layer 100 % pruned (empty)" in legend


def test_layerwise_keeps_model_order_and_appends_other_layers(tmp_path, drawn):
    profiles = {"a": {"fc2": 0.1, "fc1": 0.2}, "b": {"fc1": 0.3, "head": 0.4}}
    plot_layerwise(profiles, 0.5, tmp_path / "l.png", "t")
    assert tick_labels(drawn[0]) == ["fc2", "fc1", "head"]
    assert texts(drawn[0]) == []


def test_layerwise_missing_values_single_method_and_long_name(tmp_path):
    profiles = {LONG_NAME: {"fc1": None, "fc2": math.nan, "fc3": 0.8}}
    assert_png(plot_layerwise(profiles, 0.8, tmp_path / "l.png", "t"))


def test_layerwise_many_layers_stays_bounded(tmp_path, drawn):
    profiles = {"m": {layer: 0.9 for layer in bert_layers(60)}}
    plot_layerwise(profiles, 0.9, tmp_path / "l.png", "t")
    width, _ = drawn[0].get_size_inches()
    assert width <= 24 and len(tick_labels(drawn[0])) < 180


@pytest.mark.parametrize("profiles", [{}, {"m": {}}, {"m": {"fc": None}, "n": {"fc": math.nan}}])
def test_layerwise_without_data_says_so(tmp_path, drawn, profiles):
    assert_png(plot_layerwise(profiles, 0.5, tmp_path / "l.png", "t"))
    assert texts(drawn[0]) == ["no data"]


# --------------------------------------------------------------------------------------------------
# heatmap

def test_heatmap_numbers_hatching_and_missing_cells(tmp_path, drawn):
    from matplotlib.patches import Rectangle

    methods, grid = ["magnitude", LONG_NAME], [0.2, 0.5, 0.8]
    values = {("magnitude", 0.2): 0.801, ("magnitude", 0.5): 0.75, ("magnitude", 0.8): None,
              (LONG_NAME, 0.2): 0.79, (LONG_NAME, 0.5): math.nan, (LONG_NAME, 0.8): 0.4}
    failing = {("magnitude", 0.5): False, (LONG_NAME, 0.8): True}
    path = plot_heatmap(methods, grid, values, failing, tmp_path / "heat.png", "t", "accuracy")
    assert_png(path)
    (fig,) = drawn
    assert texts(fig) == ["80.1", "75.0", "—", "79.0", "—", "40.0 ✗"]
    hatched = [p for p in fig.axes[0].patches if isinstance(p, Rectangle) and p.get_hatch() == "//"]
    assert len(hatched) == 1
    assert fig.axes[0].images[0].get_cmap().name.startswith("cividis")
    assert fig.axes[1].get_ylabel() == "accuracy"


def test_heatmap_matches_sparsities_despite_float_noise(tmp_path, drawn):
    plot_heatmap(["m"], [0.1 + 0.2], {("m", 0.3): 0.5}, {("m", 0.3): True}, tmp_path / "h.png", "t", "acc")
    assert texts(drawn[0]) == ["50.0 ✗"]


def test_heatmap_single_cell(tmp_path):
    assert_png(plot_heatmap(["m"], [0.5], {("m", 0.5): 0.7}, {}, tmp_path / "h.png", "t", "acc"))


@pytest.mark.parametrize("methods, grid, values", [
    ([], [], {}),
    (["m"], [], {}),
    ([], [0.5], {}),
    (["m", "n"], [0.5], {("m", 0.5): None, ("n", 0.5): math.nan}),
])
def test_heatmap_without_data_says_so(tmp_path, drawn, methods, grid, values):
    assert_png(plot_heatmap(methods, grid, values, {}, tmp_path / "h.png", "t", "acc"))
    assert texts(drawn[0]) == ["no data"]


# --------------------------------------------------------------------------------------------------
# similarity

def test_similarity_is_symmetric_with_unit_diagonal(tmp_path, drawn):
    methods = ["a", "b", LONG_NAME]
    values = {("b", "a"): 0.25, ("a", LONG_NAME): None, (LONG_NAME, "b"): 0.5}
    assert_png(plot_similarity(methods, values, tmp_path / "s.png", "t", "Jaccard"))
    (fig,) = drawn
    assert texts(fig) == ["1.00", "0.25", "—",
                          "0.25", "1.00", "0.50",
                          "—", "0.50", "1.00"]
    assert fig.axes[0].images[0].get_clim() == (0.0, 1.0)
    assert fig.axes[1].get_ylabel() == "Jaccard"


def test_similarity_range_widens_for_negative_values(tmp_path, drawn):
    plot_similarity(["a", "b"], {("a", "b"): -0.3}, tmp_path / "s.png", "t", "Pearson r")
    assert drawn[0].axes[0].images[0].get_clim() == (-1.0, 1.0)
    assert texts(drawn[0]) == ["1.00", "-0.30", "-0.30", "1.00"]


@pytest.mark.parametrize("methods, values", [
    ([], {}),
    (["a"], {}),
    (["a", "b"], {("a", "b"): math.nan}),
])
def test_similarity_without_data_says_so(tmp_path, drawn, methods, values):
    assert_png(plot_similarity(methods, values, tmp_path / "s.png", "t", "J"))
    assert texts(drawn[0])[0].startswith("no data")


# --------------------------------------------------------------------------------------------------
# saving

@pytest.fixture
def figure():
    style.load_pyplot()
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 2))
    yield fig
    plt.close(fig)


def test_save_figure_is_atomic_and_leaves_no_temp_file(tmp_path, figure):
    path = save_figure(figure, tmp_path / "sub" / "f.png")
    assert path == tmp_path / "sub" / "f.png"
    assert_png(path)
    assert os.listdir(tmp_path / "sub") == ["f.png"]


def test_saved_png_has_ordinary_permissions(tmp_path, figure):
    (tmp_path / "plain").write_text("")
    path = save_figure(figure, tmp_path / "f.png")
    assert path.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777


def test_save_figure_cleans_up_when_the_final_rename_fails(tmp_path, figure):
    (tmp_path / "f.png").mkdir()           # a directory where the file should go
    with pytest.raises(UserError):
        save_figure(figure, tmp_path / "f.png")
    assert os.listdir(tmp_path) == ["f.png"]


def test_unwritable_directory_is_a_one_line_user_error(tmp_path, figure):
    (tmp_path / "blocker").write_text("a file, not a directory")
    target = tmp_path / "blocker" / "f.png"
    with pytest.raises(UserError) as err:
        save_figure(figure, target)
    assert str(target) in str(err.value) and "\n" not in str(err.value)


def test_plot_functions_report_unwritable_directory(tmp_path):
    (tmp_path / "blocker").write_text("")
    with pytest.raises(UserError, match="cannot write"):
        plot_similarity(["a", "b"], {("a", "b"): 0.5}, tmp_path / "blocker" / "s.png", "t", "J")


def test_import_does_not_load_matplotlib():
    code = "import sys, smctune.report.figures.registry; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
