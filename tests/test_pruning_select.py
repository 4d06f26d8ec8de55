import pytest
from torch import nn

from smctune.errors import UserError
from toy_models import TiedLM
from smctune.pruning import PrunableParam, num_pruned, select_prunable


pytestmark = pytest.mark.usefixtures("single_thread")




def names(params):
    return [p.name for p in params]


def test_num_pruned_rounding_rule():
    assert num_pruned(10, 0.25) == 3          # 2.5 -> 3 (half rounds up)
    assert num_pruned(10, 0.24) == 2
    assert num_pruned(10, 0.0) == 0
    assert num_pruned(3, 0.5) == 2            # 1.5 -> 2
    assert num_pruned(1000, 0.893) == 893
    assert num_pruned(7, 0.999) == 7


def test_default_rule_selects_matrices_and_embeddings_once_with_aliases():
    model = TiedLM()
    params = select_prunable(model)
    assert names(params) == ["embed.weight", "body.weight"]
    emb = params[0]
    assert isinstance(emb, PrunableParam)
    assert emb.param is model.embed.weight and emb.param is model.head.weight
    assert emb.aliases == ("head.weight",)
    assert params[1].aliases == ()


def test_include_may_select_any_shape_and_exclude_matches_aliases():
    model = TiedLM()
    assert names(select_prunable(model, include=[r"bias$"])) == ["body.bias", "norm.bias", "head.bias"]
    assert names(select_prunable(model, include=r"^norm\.")) == ["norm.weight", "norm.bias"]
    # "head" only names the alias of the tied embedding: excluding it excludes the tensor.
    assert names(select_prunable(model, exclude=[r"^head\."])) == ["body.weight"]
    assert names(select_prunable(model, include=[r"weight"], exclude=[r"norm"])) == [
        "embed.weight", "body.weight"]
    # An include that matches only an alias still selects the tensor under its canonical name.
    sel = select_prunable(model, include=[r"^head\.weight$"])
    assert names(sel) == ["embed.weight"] and sel[0].aliases == ("head.weight",)


def test_nothing_selected_is_a_user_error_naming_the_patterns():
    model = TiedLM()
    with pytest.raises(UserError, match=r"include=\['nomatch'\]"):
        select_prunable(model, include=["nomatch"])
    with pytest.raises(UserError, match=r"exclude=\['\.'\]"):
        select_prunable(model, exclude=["."])
    with pytest.raises(UserError, match="invalid include regex"):
        select_prunable(model, include=["("])
    with pytest.raises(UserError, match="default rule"):
        select_prunable(nn.LayerNorm(4))


def test_compute_mask_respects_include_exclude():
    from smctune.pruning import compute_mask

    model = TiedLM()
    mask = compute_mask(model, "magnitude", 0.5, exclude=[r"^head\."])
    assert list(mask) == ["body.weight"]
    mask = compute_mask(model, "random", 0.5, include=[r"bias$"], scope="layerwise")
    assert list(mask) == ["body.bias", "norm.bias", "head.bias"] and mask.counts() == (18, 36)
    with pytest.raises(UserError, match="no prunable parameters"):
        compute_mask(model, "magnitude", 0.5, include=["nothing"])


def test_library_imports_without_ray():
    import subprocess
    import sys

    code = ("import sys; import smctune.pruning as p; "
            "assert 'ray' not in sys.modules, 'ray imported'; print(sorted(p.CRITERIA))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ("['gradient', 'magnitude', 'obert', 'random', 'snip', 'sparsegpt', "
                                  "'wanda']")
