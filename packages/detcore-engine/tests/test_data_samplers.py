from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch

from detcore.engine.data import (
    DatasetMapper,
    InferenceSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
    build_detection_test_loader,
    build_detection_train_loader,
    load_coco_json,
    make_shapes_dataset,
    repeat_factors_from_category_frequency,
)


@pytest.fixture(scope="module")
def shapes_small(tmp_path_factory):
    """A tiny shapes dataset (8 train, 2 val images, seed 0): ``{split: (json_file, image_root)}``."""
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=2, seed=0)


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_training_sampler_deterministic_permutations():
    a = _take(TrainingSampler(7, seed=3), 35)
    assert a == _take(TrainingSampler(7, seed=3), 35)
    assert a != _take(TrainingSampler(7, seed=4), 35)
    for e in range(5):
        assert sorted(a[7 * e : 7 * e + 7]) == list(range(7))  # each epoch a permutation
    assert len({tuple(a[7 * e : 7 * e + 7]) for e in range(5)}) > 1  # reshuffled per epoch
    assert _take(TrainingSampler(3, shuffle=False, seed=0), 7) == [0, 1, 2, 0, 1, 2, 0]


@pytest.mark.parametrize("k", [0, 1, 6, 7, 23])
def test_training_sampler_resume(k):
    full = _take(TrainingSampler(7, seed=11), 60)
    s = TrainingSampler(7, seed=11)
    head = _take(s, k)
    state = s.state_dict()
    assert state["consumed"] == k
    resumed = TrainingSampler(7, seed=11)
    resumed.load_state_dict(state)
    assert head + _take(resumed, 60 - k) == full
    assert head + _take(s, 60 - k) == full  # iterating the same sampler again also continues
    with pytest.raises(ValueError, match="seed"):
        TrainingSampler(7, seed=12).load_state_dict(state)


def test_training_sampler_sharding():
    full = _take(TrainingSampler(10, seed=5), 40)
    r0 = _take(TrainingSampler(10, seed=5, rank=0, world_size=2), 20)
    r1 = _take(TrainingSampler(10, seed=5, rank=1, world_size=2), 20)
    assert r0 == full[0::2] and r1 == full[1::2]
    s = TrainingSampler(10, seed=5, rank=1, world_size=2)
    _take(s, 7)
    t = TrainingSampler(10, seed=5, rank=1, world_size=2)
    t.load_state_dict(s.state_dict())
    assert _take(t, 5) == full[1::2][7:12]
    with pytest.raises(ValueError, match="rank"):
        TrainingSampler(10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="size"):
        TrainingSampler(0)


def test_repeat_factors_hand_computed():
    dicts = [
        {"annotations": [{"category_id": 0}, {"category_id": 0}]},
        {"annotations": [{"category_id": 0}, {"category_id": 1}]},
        {"annotations": [{"category_id": 0}]},
        {"annotations": [{"category_id": 0}]},
        {"annotations": []},
    ]
    # f(0) = 4/5 -> r = max(1, sqrt(0.5 / 0.8)) = 1; f(1) = 1/5 -> sqrt(0.5 / 0.2) = sqrt(2.5)
    r = repeat_factors_from_category_frequency(dicts, 0.5)
    assert r.tolist() == pytest.approx([1.0, math.sqrt(2.5), 1.0, 1.0, 1.0])
    r = repeat_factors_from_category_frequency(dicts, 1.0)  # f(0) = 0.8 -> sqrt(1.25)
    assert r.tolist() == pytest.approx([math.sqrt(1.25), math.sqrt(5), math.sqrt(1.25), math.sqrt(1.25), 1.0])
    with pytest.raises(ValueError, match="repeat_thresh"):
        repeat_factors_from_category_frequency(dicts, 0)


def test_repeat_factor_sampler():
    s = RepeatFactorTrainingSampler(torch.tensor([1.0, 2.0, 0.0, 1.5]), seed=0)
    for e in range(3):
        epoch = Counter(s._epoch(e))
        assert epoch[0] == 1 and epoch[1] == 2 and epoch[2] == 0 and epoch[3] in (1, 2)
    counts = Counter(_take(s, 4500))
    assert counts[2] == 0
    assert counts[1] / counts[0] == pytest.approx(2.0, rel=0.02)
    assert counts[3] / counts[0] == pytest.approx(1.5, rel=0.1)
    full = _take(RepeatFactorTrainingSampler(torch.tensor([1.0, 2.0, 0.0, 1.5]), seed=0), 50)
    t = RepeatFactorTrainingSampler(torch.tensor([1.0, 2.0, 0.0, 1.5]), seed=0)
    head = _take(t, 13)
    u = RepeatFactorTrainingSampler(torch.tensor([1.0, 2.0, 0.0, 1.5]), seed=0)
    u.load_state_dict(t.state_dict())
    assert head + _take(u, 37) == full
    with pytest.raises(ValueError, match="repeat_factors"):
        RepeatFactorTrainingSampler(torch.tensor([1.0, -1.0]))


def test_inference_sampler():
    shards = [list(InferenceSampler(10, rank=r, world_size=3)) for r in range(3)]
    assert shards == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert len(InferenceSampler(10, rank=2, world_size=3)) == 3
    assert list(InferenceSampler(0)) == []


@pytest.fixture(scope="module")
def dicts(shapes_small):
    return load_coco_json(*shapes_small["train"])


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("grouping", [True, False])
def test_train_loader_batches(dicts, num_workers, grouping):
    loader = build_detection_train_loader(
        dicts,
        mapper=DatasetMapper(True),
        sampler=TrainingSampler(len(dicts), seed=1),
        total_batch_size=2,
        aspect_ratio_grouping=grouping,
        num_workers=num_workers,
    )
    batches = list(itertools.islice(iter(loader), 3))
    assert [len(b) for b in batches] == [2, 2, 2]
    for b in batches:
        for x in b:
            assert x["image"].shape == (3, 256, 320) and len(x["instances"]) > 0
    s = [dicts[i]["image_id"] for i in _take(TrainingSampler(len(dicts), seed=1), 8)]
    ids = [x["image_id"] for b in batches for x in b]
    if num_workers == 0 or grouping:
        assert ids == s[:6]  # items come in stream order (the workers alternate item by item)
    else:
        # each worker batches its own share (worker 0: s[0::2], worker 1: s[1::2]); batches alternate
        assert ids == [s[0], s[2], s[1], s[3], s[4], s[6]]


def test_test_loader(dicts):
    loader = build_detection_test_loader(dicts[:5], mapper=DatasetMapper(False), num_workers=0)
    batches = list(loader)
    assert [len(b) for b in batches] == [1] * 5
    assert [b[0]["image_id"] for b in batches] == [d["image_id"] for d in dicts[:5]]
    assert "instances" not in batches[0][0]
    with pytest.raises(ValueError, match="total_batch_size"):
        build_detection_train_loader(dicts, mapper=None, total_batch_size=0)
