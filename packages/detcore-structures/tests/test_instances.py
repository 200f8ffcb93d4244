from __future__ import annotations

import pytest
import torch

from detcore.structures import BitMasks, Boxes, Instances, Keypoints, PolygonMasks


def make(n: int = 4, offset: float = 0.0) -> Instances:
    inst = Instances((30, 40))
    inst.pred_boxes = Boxes(torch.arange(n * 4, dtype=torch.float32).view(n, 4) + offset)
    inst.scores = torch.linspace(0, 1, n) + offset
    inst.names = [f"obj{i + offset:g}" for i in range(n)]
    inst.masks = BitMasks(torch.zeros(n, 30, 40, dtype=torch.bool))
    return inst


def test_fields_and_attributes():
    inst = make()
    assert inst.image_size == (30, 40)
    assert len(inst) == 4
    assert inst.has("scores") and not inst.has("foo")
    assert inst.get("scores") is inst.scores
    assert set(inst.get_fields()) == {"pred_boxes", "scores", "names", "masks"}
    inst.set("labels", torch.tensor([1, 2, 3, 4]))
    assert inst.labels.tolist() == [1, 2, 3, 4]
    inst.remove("labels")
    assert not inst.has("labels")
    with pytest.raises(AttributeError, match="Cannot find field 'labels'"):
        _ = inst.labels
    with pytest.raises(KeyError, match="labels"):
        inst.remove("labels")
    with pytest.raises(KeyError, match="labels"):
        inst.get("labels")
    assert "_fields" in vars(inst) and "_image_size" in vars(inst)
    kw = Instances((5, 6), scores=torch.ones(2), classes=torch.zeros(2))
    assert len(kw) == 2


def test_length_mismatch_names_field_and_lengths():
    inst = make(4)
    with pytest.raises(ValueError, match=r"'gt_classes' of length 3 to Instances of length 4"):
        inst.gt_classes = torch.zeros(3)
    with pytest.raises(TypeError, match="'bad' must have a length"):
        inst.bad = 3


def test_empty_len_raises():
    with pytest.raises(NotImplementedError, match="Empty Instances"):
        len(Instances((1, 1)))
    with pytest.raises(NotImplementedError):
        iter(make())


@pytest.mark.parametrize(
    "item",
    [
        1,
        -1,
        slice(1, 3),
        torch.tensor([True, False, True, True]),
        torch.tensor([3, 0]),
        torch.tensor([], dtype=torch.long),
    ],
)
def test_getitem(item):
    inst = make()
    sub = inst[item]
    scores = inst.scores
    if isinstance(item, int):
        expected_idx = [item % 4]
    elif isinstance(item, slice):
        expected_idx = list(range(4))[item]
    elif item.dtype == torch.bool:
        expected_idx = item.nonzero().flatten().tolist()
    else:
        expected_idx = item.tolist()
    assert len(sub) == len(expected_idx)
    assert sub.image_size == (30, 40)
    torch.testing.assert_close(sub.scores, scores[expected_idx])
    torch.testing.assert_close(sub.pred_boxes.tensor, inst.pred_boxes.tensor[expected_idx])
    assert sub.masks.tensor.shape == (len(expected_idx), 30, 40)
    assert sub.names == [inst.names[i] for i in expected_idx]


def test_getitem_out_of_range():
    with pytest.raises(IndexError, match="out of range"):
        make(4)[4]
    with pytest.raises(IndexError, match="out of range"):
        make(4)[-5]


def test_cat():
    a = make(2, 0.0)
    b = make(3, 10.0)
    c = Instances.cat([a, b])
    assert len(c) == 5
    torch.testing.assert_close(c.scores, torch.cat([a.scores, b.scores]))
    torch.testing.assert_close(c.pred_boxes.tensor, torch.cat([a.pred_boxes.tensor, b.pred_boxes.tensor]))
    assert c.names == a.names + b.names
    assert isinstance(c.masks, BitMasks) and len(c.masks) == 5
    assert Instances.cat([a]) is a
    with pytest.raises(ValueError, match="image sizes differ"):
        Instances.cat([a, Instances((1, 1), scores=torch.ones(1))])
    with pytest.raises(ValueError, match="fields differ"):
        Instances.cat([Instances((30, 40), x=torch.ones(1)), Instances((30, 40), y=torch.ones(1))])
    with pytest.raises(ValueError, match="non-empty"):
        Instances.cat([])


def test_cat_polygons_and_keypoints():
    p = PolygonMasks([[[0, 0, 1, 0, 1, 1]]])
    k = Keypoints(torch.zeros(1, 17, 3))
    a = Instances((10, 10), gt_masks=p, gt_keypoints=k)
    c = Instances.cat([a, a])
    assert len(c.gt_masks) == 2 and c.gt_keypoints.tensor.shape == (2, 17, 3)


def test_to_and_repr():
    inst = make(2)
    moved = inst.to(torch.float64)
    assert moved.scores.dtype == torch.float64
    assert moved.pred_boxes.tensor.dtype == torch.float64
    assert moved.names is inst.names  # lists have no .to: shared
    assert moved is not inst and inst.scores.dtype == torch.float32
    r = repr(inst)
    assert r.startswith(
        "Instances(num_instances=2, image_height=30, image_width=40, fields=[pred_boxes: Boxes("
    )
    assert repr(Instances((3, 4))) == "Instances(num_instances=0, image_height=3, image_width=4, fields=[])"


def test_pickle_and_deepcopy():
    import copy
    import pickle

    inst = make(3)
    for clone in (copy.deepcopy(inst), pickle.loads(pickle.dumps(inst))):
        assert clone.image_size == (30, 40) and len(clone) == 3
        torch.testing.assert_close(clone.pred_boxes.tensor, inst.pred_boxes.tensor)
        assert clone.names == inst.names
        assert clone.scores is not inst.scores
