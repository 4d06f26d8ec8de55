import pytest
import torch

from smctune.errors import UserError
from toy_models import TiedLM
from smctune.pruning import LayerStat, Mask, MaskEnforcer, compute_mask, prune, select_prunable


pytestmark = pytest.mark.usefixtures("single_thread")




def test_tied_weights_one_entry_counted_once():
    torch.manual_seed(0)
    model = TiedLM()
    mask = prune(model, "magnitude", 0.5)
    assert list(mask) == ["embed.weight", "body.weight"] and len(mask) == 2
    assert mask.aliases == {"embed.weight": ("head.weight",), "body.weight": ()}
    pruned, total = mask.counts()
    assert total == 20 * 8 + 8 * 8                       # embedding counted once, not twice
    assert pruned == 112 and mask.sparsity() == 0.5 and mask.density() == 0.5
    unique = 20 * 8 + 8 * 8 + 8 + 2 * 8 + 20             # + body.bias + norm weight/bias + head.bias
    assert mask.sparsity_over(model) == pytest.approx(112 / unique)
    m = mask["embed.weight"]
    assert (model.head.weight[~m] == 0).all() and (model.embed.weight[~m] == 0).all()
    # the zeros are visible through both paths of the forward pass
    dense_rows = model.embed(torch.arange(20))
    assert torch.equal(dense_rows == 0, ~m)
    csv = mask.layerwise_csv().splitlines()
    assert csv[0] == "name,shape,numel,kept,sparsity,aliases"
    assert csv[1].startswith("embed.weight,20x8,160,") and csv[1].endswith(",head.weight")
    assert csv[2].startswith("body.weight,8x8,64,") and csv[2].endswith(",")


def test_layerwise_stats():
    mask = Mask({"a": torch.tensor([[True, False], [False, False]]), "b": torch.ones(3, dtype=torch.bool)},
                {"a": ("x.a",)})
    assert mask.layerwise() == [LayerStat("a", (2, 2), 4, 1, 0.75, ("x.a",)),
                                LayerStat("b", (3,), 3, 3, 0.0, ())]
    assert mask.counts() == (3, 7)
    assert mask.sparsity() == pytest.approx(3 / 7)


def test_bool_dtype_validated():
    with pytest.raises(UserError, match="bool tensor"):
        Mask({"w": torch.ones(3)})
    with pytest.raises(UserError, match="aliases given for names not in the mask"):
        Mask({"w": torch.ones(3, dtype=torch.bool)}, {"v": ("u",)})


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = TiedLM()
    mask = compute_mask(model, "random", 0.7, scope="layerwise", seed=5)
    path = tmp_path / "mask.pt"
    mask.save(path)
    loaded = Mask.load(path)
    assert loaded == mask and loaded.aliases == mask.aliases
    assert all(t.dtype == torch.bool for t in loaded.values())
    assert loaded != compute_mask(model, "random", 0.7, scope="layerwise", seed=6)
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a smctune mask"):
        Mask.load(tmp_path / "other.pt")
    with pytest.raises(UserError, match="not found"):
        Mask.load(tmp_path / "missing.pt")


def test_apply_validates_names_and_shapes():
    torch.manual_seed(0)
    model = TiedLM()
    good = compute_mask(model, "magnitude", 0.5)
    wrong_shape = Mask({"body.weight": torch.ones(4, 4, dtype=torch.bool)})
    with pytest.raises(UserError, match="shape"):
        wrong_shape.apply(model)
    with pytest.raises(UserError, match="shape"):
        MaskEnforcer(model, wrong_shape)
    with pytest.raises(UserError, match="not found in the model: nope.weight"):
        Mask({"nope.weight": torch.ones(2, dtype=torch.bool)}).apply(model)
    # apply through an alias-only name works (e.g. a model that names the tied tensor differently)
    other = Mask({"head.weight": good["embed.weight"]})
    other.apply(model)
    assert (model.embed.weight[~good["embed.weight"]] == 0).all()
    good.apply(model)
    assert good.sparsity_over(model) > 0 and (model.body.weight[~good["body.weight"]] == 0).all()


def test_ones_and_to():
    model = TiedLM()
    ones = Mask.ones(select_prunable(model))
    assert ones.counts() == (0, 224) and ones.aliases["embed.weight"] == ("head.weight",)
    assert ones.to("cpu") == ones
