"""detcore.ops.nms / batched_nms against torchvision and a float64 greedy reference."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision

from detcore.ops import batched_nms, nms


def _random_boxes(
    n: int, seed: int, dtype: torch.dtype = torch.float32, scale: float = 100.0
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale / 4 + 1
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def _distinct_scores(n: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1000)
    return torch.randperm(n, generator=g).to(dtype) / max(n, 1)


def _iou64(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().tolist(), b.double().tolist()
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union != 0 else float("nan")


def _reference_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float, idxs=None) -> torch.Tensor:
    """Greedy NMS in float64: decreasing score, ties by index; suppress IoU > thr within a category."""
    n = boxes.shape[0]
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    suppressed = [False] * n
    keep = []
    for a, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[a + 1 :]:
            if suppressed[j] or (idxs is not None and int(idxs[i]) != int(idxs[j])):
                continue
            if _iou64(boxes[i], boxes[j]) > thr:
                suppressed[j] = True
    return torch.tensor(keep, dtype=torch.int64)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_torchvision(seed, thr):
    boxes = _random_boxes(300, seed)
    scores = _distinct_scores(300, seed)
    expected = torchvision.ops.nms(boxes, scores, thr)
    assert torch.equal(nms(boxes, scores, thr), expected)


@pytest.mark.parametrize("thr", [0.2, 0.5, 0.8])
def test_nms_matches_float64_reference(thr):
    boxes = _random_boxes(150, 7, torch.float64)
    scores = _distinct_scores(150, 7, torch.float64)
    assert torch.equal(nms(boxes, scores, thr), _reference_nms(boxes, scores, thr))


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("thr", [0.3, 0.6])
def test_batched_nms_matches_torchvision(seed, thr):
    n = 3000  # large enough for the parallel per-category path
    boxes = _random_boxes(n, seed, scale=400.0)
    scores = _distinct_scores(n, seed)
    idxs = torch.randint(0, 7, (n,), generator=torch.Generator().manual_seed(seed))
    expected = torchvision.ops.batched_nms(boxes, scores, idxs, thr)
    assert torch.equal(batched_nms(boxes, scores, idxs, thr), expected)
    small = slice(0, 120)
    assert torch.equal(
        batched_nms(boxes[small], scores[small], idxs[small], thr),
        _reference_nms(boxes[small], scores[small], thr, idxs[small]),
    )


def test_tied_scores_are_stable_and_valid_greedy():
    boxes = torch.tensor(
        [[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60], [2, 2, 12, 12], [51, 51, 61, 61]],
        dtype=torch.float32,
    )
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.9, 0.5])
    keep = nms(boxes, scores, 0.5)
    # box 4 first (highest), then ties in index order: 0 overlaps 4 (IoU 0.47 < 0.5) -> kept, 1 and 2
    # overlap 0 or 4 above 0.5 -> suppressed, 3 kept, 5 overlaps 3 (IoU 0.68) -> suppressed.
    assert keep.tolist() == [4, 0, 3]
    assert torch.equal(keep, _reference_nms(boxes, scores, 0.5))
    g = torch.Generator().manual_seed(5)
    boxes = _random_boxes(200, 5)
    scores = torch.randint(0, 4, (200,), generator=g).float()  # heavy ties
    keep = nms(boxes, scores, 0.4)
    assert torch.equal(keep, _reference_nms(boxes, scores, 0.4))
    assert _valid_greedy(boxes, scores, keep, 0.4)
    # Ties only reorder within equal scores: the kept set of distinct-score groups matches torchvision's
    # when every tie is broken the same way (index order encoded into the scores).
    tie_broken = scores - torch.arange(200) * 1e-5
    assert set(keep.tolist()) == set(torchvision.ops.nms(boxes, tie_broken, 0.4).tolist())


def _valid_greedy(boxes, scores, keep, thr) -> bool:
    kept = keep.tolist()
    # kept boxes are in non-increasing score order and never overlap each other above thr
    if any(float(scores[a]) < float(scores[b]) for a, b in itertools.pairwise(kept)):
        return False
    for x, i in enumerate(kept):
        for j in kept[x + 1 :]:
            if _iou64(boxes[i], boxes[j]) > thr:
                return False
    # every dropped box overlaps a kept box of higher or equal score above thr
    kept_set = set(kept)
    for j in range(boxes.shape[0]):
        if j not in kept_set and not any(
            float(scores[i]) >= float(scores[j]) and _iou64(boxes[i], boxes[j]) > thr for i in kept
        ):
            return False
    return True


def test_empty_and_single():
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,)
    empty = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,)
    assert nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([0.3]), 0.5).tolist() == [0]


def test_degenerate_boxes_match_torchvision():
    boxes = torch.tensor(
        [
            [5, 5, 5, 5],  # zero area
            [5, 5, 5, 5],  # identical zero area (IoU 0/0 = nan: not suppressed)
            [0, 0, 10, 10],
            [10, 10, 0, 0],  # negative size
            [3, 3, 2, 8],  # negative width
            [0, 0, 10, 10],  # duplicate of 2
            [4, 0, 4, 10],  # zero width inside 2
        ],
        dtype=torch.float32,
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    for thr in (0.0, 0.5, 0.99):
        assert torch.equal(nms(boxes, scores, thr), torchvision.ops.nms(boxes, scores, thr))
    assert nms(boxes, scores, 0.5).tolist() == [0, 1, 2, 3, 4, 6]


def test_huge_coordinates_match_torchvision():
    boxes = _random_boxes(400, 11, scale=100.0) + 1e6
    scores = _distinct_scores(400, 11)
    for thr in (0.3, 0.7):
        assert torch.equal(nms(boxes, scores, thr), torchvision.ops.nms(boxes, scores, thr))


def test_non_contiguous_inputs():
    boxes = _random_boxes(200, 4)
    scores = _distinct_scores(200, 4)
    wide = torch.zeros(200, 8)
    wide[:, ::2] = boxes
    strided_scores = torch.stack([scores, scores], dim=1)[:, 0]
    assert not wide[:, ::2].is_contiguous() and not strided_scores.is_contiguous()
    assert torch.equal(nms(wide[:, ::2], strided_scores, 0.5), nms(boxes, scores, 0.5))
    assert torch.equal(nms(boxes.t().contiguous().t(), scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))


def test_negative_threshold_keeps_only_top_box():
    boxes = _random_boxes(50, 8)
    scores = _distinct_scores(50, 8)
    keep = nms(boxes, scores, -0.1)
    assert torch.equal(keep, torchvision.ops.nms(boxes, scores, -0.1))
    assert keep.tolist() == [int(scores.argmax())]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype):
    # Integer coordinates are exact in every dtype; scores are distinct in bfloat16 too.
    g = torch.Generator().manual_seed(9)
    xy = torch.randint(0, 100, (120, 2), generator=g)
    wh = torch.randint(1, 30, (120, 2), generator=g)
    boxes = torch.cat([xy, xy + wh], 1).to(dtype)
    scores = (torch.randperm(120, generator=g).float() / 8).to(dtype)
    keep = nms(boxes, scores, 0.5)
    assert keep.dtype == torch.int64
    assert torch.equal(keep, torchvision.ops.nms(boxes.double(), scores.double(), 0.5))
    idxs = torch.randint(0, 3, (120,), generator=g)
    assert torch.equal(
        batched_nms(boxes, scores, idxs, 0.5),
        torchvision.ops.batched_nms(boxes.double(), scores.double(), idxs, 0.5),
    )


def test_float64_scores_with_float32_boxes_keep_their_order():
    # 1 and 1 + 1e-12 are equal in float32; the float64 order must decide (torchvision rejects mixed dtypes).
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10.5], [20, 20, 30, 30]])
    scores = torch.tensor([1.0, 1.0 + 1e-12, 0.5], dtype=torch.float64)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert batched_nms(boxes, scores, torch.zeros(3, dtype=torch.int64), 0.5).tolist() == [1, 2]
    assert torch.equal(nms(boxes, scores, 0.5), torchvision.ops.nms(boxes.double(), scores, 0.5))
    g = torch.Generator().manual_seed(12)
    boxes = _random_boxes(200, 12)
    scores = torch.rand(200, generator=g, dtype=torch.float64)
    scores[::3] = scores[1::3][: scores[::3].shape[0]]  # exact float64 ties too
    assert torch.equal(nms(boxes, scores, 0.5), _reference_nms(boxes, scores, 0.5))


def test_opcheck():
    boxes = _random_boxes(20, 1)
    scores = _distinct_scores(20, 1)
    idxs = torch.randint(0, 3, (20,), generator=torch.Generator().manual_seed(1))
    torch.library.opcheck(torch.ops.detcore.nms.default, (boxes, scores, 0.5))
    torch.library.opcheck(torch.ops.detcore.batched_nms.default, (boxes, scores, idxs, 0.5))


def test_export_kept_count_is_unbacked_and_bounded():
    boxes = _random_boxes(20, 3)
    scores = _distinct_scores(20, 3)
    idxs = torch.randint(0, 3, (20,), generator=torch.Generator().manual_seed(3))

    class M(torch.nn.Module):
        def forward(self, b, s, i):
            return nms(b, s, 0.5), batched_nms(b, s, i, 0.5)

    ep = torch.export.export(M(), (boxes, scores, idxs))
    out = next(n for n in ep.graph.nodes if n.op == "output").args[0]
    for node in out:
        (count,) = node.meta["val"].shape
        assert not isinstance(count, int)  # data-dependent
        bounds = ep.range_constraints[count.node.expr]
        assert bounds.lower == 0 and bounds.upper == 20  # at most the 20 input boxes
    got = ep.module()(boxes, scores, idxs)
    assert torch.equal(got[0], nms(boxes, scores, 0.5))
    assert torch.equal(got[1], batched_nms(boxes, scores, idxs, 0.5))


def test_torch_compile_fullgraph():
    boxes = _random_boxes(60, 2)
    scores = _distinct_scores(60, 2)
    idxs = torch.randint(0, 3, (60,), generator=torch.Generator().manual_seed(2))

    def fn(b, s, i):
        return nms(b, s, 0.5), batched_nms(b, s, i, 0.5)

    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        compiled = torch.compile(fn, fullgraph=True, backend="eager")
        got = compiled(boxes, scores, idxs)
    expected = fn(boxes, scores, idxs)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_bad_inputs():
    boxes = _random_boxes(5, 0)
    scores = torch.rand(5)
    with pytest.raises(TypeError, match="boxes"):
        nms(boxes.tolist(), scores, 0.5)
    with pytest.raises(ValueError, match="boxes"):
        nms(boxes[:, :3], scores, 0.5)
    with pytest.raises(ValueError, match="boxes"):
        nms(boxes[None], scores, 0.5)
    with pytest.raises(ValueError, match="scores"):
        nms(boxes, scores[:4], 0.5)
    with pytest.raises(TypeError, match="boxes"):
        nms(boxes.long(), scores, 0.5)
    with pytest.raises(TypeError, match="scores"):
        nms(boxes, scores.long(), 0.5)
    with pytest.raises(TypeError, match="iou_threshold"):
        nms(boxes, scores, "0.5")
    with pytest.raises(ValueError, match="device"):
        nms(boxes, scores.to("meta"), 0.5)
    with pytest.raises(TypeError, match="idxs"):
        batched_nms(boxes, scores, torch.zeros(5), 0.5)
    with pytest.raises(ValueError, match="idxs"):
        batched_nms(boxes, scores, torch.zeros(4, dtype=torch.int64), 0.5)
