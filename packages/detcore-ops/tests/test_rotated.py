"""detcore.ops rotated-box ops against detectron2's golden outputs and float64 references."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from detcore.ops import batched_nms_rotated, box_iou_rotated, nms_rotated


def _golden(name: str) -> dict[str, np.ndarray]:
    for parent in Path(__file__).resolve().parents:
        path = parent / "shared" / "reference" / "golden" / "ops" / name
        if path.exists():
            return dict(np.load(path))
    pytest.fail(f"golden file {name} not found above {__file__}")


def _corners(box) -> list[tuple[float, float]]:
    x, y, w, h, a = (float(v) for v in box)
    # Counter-clockwise as seen in an image (y pointing down): a rotation by -angle in x/y coordinates.
    c, s = math.cos(math.radians(a)), -math.sin(math.radians(a))
    return [
        (x + c * dx - s * dy, y + s * dx + c * dy)
        for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))
    ]


def _area(poly) -> float:
    return 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1])))


def _clip(subject, clipper):
    """Sutherland-Hodgman: subject polygon clipped by a convex clipper (float64)."""
    sign = (
        1.0
        if sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(clipper, clipper[1:] + clipper[:1])) > 0
        else -1.0
    )
    out = subject
    for (ax, ay), (bx, by) in zip(clipper, clipper[1:] + clipper[:1]):
        if not out:
            break
        inp, out = out, []

        def side(p, ax=ax, ay=ay, bx=bx, by=by):
            return sign * ((bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax))

        for p, q in zip(inp, inp[1:] + inp[:1]):
            sp, sq = side(p), side(q)
            if sp >= 0:
                out.append(p)
            if (sp >= 0) != (sq >= 0):
                t = sp / (sp - sq)
                out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
    return out


def _reference_iou(b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(b1.shape[0], b2.shape[0], dtype=torch.float64)
    for i, p in enumerate(b1.double().tolist()):
        for j, q in enumerate(b2.double().tolist()):
            a1, a2 = p[2] * p[3], q[2] * q[3]
            if a1 < 1e-14 or a2 < 1e-14:
                continue
            inter = _area(_clip(_corners(p), _corners(q)))
            out[i, j] = inter / (a1 + a2 - inter)
    return out


def _reference_nms(iou: torch.Tensor, scores: torch.Tensor, thr: float, idxs=None) -> list[int]:
    """Greedy NMS from an IoU matrix: decreasing score (ties by index), suppress IoU >= thr."""
    n = scores.shape[0]
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    suppressed = [False] * n
    keep = []
    for a, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[a + 1 :]:
            same = idxs is None or int(idxs[i]) == int(idxs[j])
            if not suppressed[j] and (float(iou[i, j]) if same else 0.0) >= thr:
                suppressed[j] = True
    return keep


def _random_rotated(
    n: int, seed: int, dtype=torch.float32, extent=(200.0, 150.0), size=(5.0, 60.0)
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    b = torch.empty(n, 5, dtype=torch.float64)
    b[:, 0] = torch.rand(n, generator=g, dtype=torch.float64) * extent[0]
    b[:, 1] = torch.rand(n, generator=g, dtype=torch.float64) * extent[1]
    b[:, 2:4] = size[0] + torch.rand(n, 2, generator=g, dtype=torch.float64) * (size[1] - size[0])
    b[:, 4] = torch.rand(n, generator=g, dtype=torch.float64) * 360 - 180
    return b.to(dtype)


# ----------------------------------------------------------------------------------------------- box_iou_rotated


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_iou_rotated_matches_golden(dtype):
    d = _golden("box_iou_rotated.npz")
    got = box_iou_rotated(torch.from_numpy(d["boxes1"]).to(dtype), torch.from_numpy(d["boxes2"]).to(dtype))
    assert got.dtype == dtype and got.shape == (70, 50)
    torch.testing.assert_close(got.double(), torch.from_numpy(d["iou"]).double(), rtol=0, atol=1e-5)
    if dtype == torch.float32:  # same arithmetic as detectron2: bit-identical
        assert torch.equal(got, torch.from_numpy(d["iou"]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_iou_rotated_matches_golden_edge_cases(dtype):
    d = _golden("box_iou_rotated_edge.npz")
    for a, b, key in (("pairs_a", "pairs_b", "pairs_iou_matrix"), ("random_a", "random_b", "random_iou")):
        got = box_iou_rotated(torch.from_numpy(d[a]).to(dtype), torch.from_numpy(d[b]).to(dtype))
        torch.testing.assert_close(got.double(), torch.from_numpy(d[key]).double(), rtol=0, atol=1e-5)
    diag = box_iou_rotated(torch.from_numpy(d["pairs_a"]), torch.from_numpy(d["pairs_b"])).diagonal()
    named = dict(zip(d["pair_descriptions"].tolist(), diag.tolist()))
    assert named["identical"] == pytest.approx(1.0, abs=1e-6)
    assert named["sharing an edge (touching)"] == 0.0
    assert named["zero width, identical"] == 0.0
    assert named["square and its 45-degree copy (octagon)"] == pytest.approx(0.7071, abs=1e-4)
    empty = box_iou_rotated(torch.zeros(0, 5), torch.from_numpy(d["pairs_b"]))
    assert list(empty.shape) == d["empty_iou_shape"].tolist()


def test_box_iou_rotated_matches_float64_polygon_clipping():
    a = _random_rotated(30, 0, torch.float64, extent=(60, 60), size=(3, 40))
    b = _random_rotated(20, 1, torch.float64, extent=(60, 60), size=(3, 40))
    expected = _reference_iou(a, b)
    assert (expected > 0).float().mean() > 0.3  # mostly overlapping pairs
    torch.testing.assert_close(box_iou_rotated(a, b), expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(
        box_iou_rotated(a.float(), b.float()).double(),
        _reference_iou(a.float(), b.float()),
        rtol=0,
        atol=2e-5,
    )


def test_box_iou_rotated_far_apart_and_parallel_rows():
    # Many rows (parallel split) with mostly far-apart pairs: the bound pruning must agree with clipping.
    a = _random_rotated(400, 2, torch.float64, extent=(1000, 1000), size=(2, 120))
    b = _random_rotated(6, 3, torch.float64, extent=(1000, 1000), size=(2, 120))
    torch.testing.assert_close(box_iou_rotated(a, b), _reference_iou(a, b), rtol=0, atol=1e-9)


def test_box_iou_rotated_angle_periodicity_and_axis_aligned():
    base = torch.tensor([[10.0, 20.0, 30.0, 8.0, 17.0]], dtype=torch.float64)
    turned = base.clone()
    turned[0, 4] += 180
    swapped = torch.tensor([[10.0, 20.0, 8.0, 30.0, 107.0]], dtype=torch.float64)
    # detectron2 converts degrees with 0.01745329251 (pi / 180 to 11 digits), so 180 degrees is not exact.
    assert box_iou_rotated(base, turned).item() == pytest.approx(1.0, abs=1e-7)
    assert box_iou_rotated(base, swapped).item() == pytest.approx(1.0, abs=1e-7)
    # angle 0: axis-aligned IoU of [0,0,4,2] and [2,0,6,2] is 4 / 12
    got = box_iou_rotated(torch.tensor([[2.0, 1, 4, 2, 0]]), torch.tensor([[4.0, 1, 4, 2, 0]]))
    assert got.item() == pytest.approx(1 / 3, abs=1e-6)


def test_box_iou_rotated_huge_coordinates_shift_invariant():
    a = _random_rotated(20, 4, torch.float64, extent=(80, 80))
    b = _random_rotated(10, 5, torch.float64, extent=(80, 80))
    shift = torch.tensor([1e6, -1e6, 0, 0, 0], dtype=torch.float64)
    torch.testing.assert_close(
        box_iou_rotated(a + shift, b + shift), box_iou_rotated(a, b), rtol=0, atol=1e-8
    )


def test_box_iou_rotated_dtypes_and_layout():
    a = _random_rotated(16, 6)
    b = _random_rotated(9, 7)
    ref = box_iou_rotated(a, b)
    wide = torch.zeros(16, 10)
    wide[:, ::2] = a
    assert torch.equal(box_iou_rotated(wide[:, ::2], b), ref)
    for dtype in (torch.float16, torch.bfloat16):
        got = box_iou_rotated(a.to(dtype), b.to(dtype))
        assert got.dtype == dtype
        assert torch.equal(got, box_iou_rotated(a.to(dtype).float(), b.to(dtype).float()).to(dtype))
    assert box_iou_rotated(a, b.double()).dtype == torch.float64


# -------------------------------------------------------------------------------------------------- nms_rotated


def test_nms_rotated_matches_golden():
    d = _golden("nms_rotated.npz")
    boxes, scores, idxs = (torch.from_numpy(d[k]) for k in ("boxes", "scores", "idxs"))
    for thr in (0.1, 0.3, 0.5, 0.7, 0.9):
        assert torch.equal(nms_rotated(boxes, scores, thr), torch.from_numpy(d[f"keep_{thr}"]))
        assert torch.equal(
            batched_nms_rotated(boxes, scores, idxs, thr), torch.from_numpy(d[f"batched_keep_{thr}"])
        )


def test_nms_rotated_matches_golden_clusters():
    d = _golden("nms_rotated_clusters.npz")
    boxes, scores, idxs = (torch.from_numpy(d[k]) for k in ("boxes", "scores", "idxs"))
    for thr in (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0):
        assert torch.equal(nms_rotated(boxes, scores, thr), torch.from_numpy(d[f"keep_{thr}"]))
        assert torch.equal(
            batched_nms_rotated(boxes, scores, idxs, thr), torch.from_numpy(d[f"batched_keep_{thr}"])
        )
    assert torch.equal(
        nms_rotated(torch.from_numpy(d["boxes_f64"]), scores, 0.5), torch.from_numpy(d["keep_f64_0.5"])
    )
    empty = nms_rotated(torch.zeros(0, 5), torch.zeros(0), 0.5)
    assert empty.dtype == torch.int64 and list(empty.shape) == d["empty_keep_shape"].tolist()
    empty = batched_nms_rotated(torch.zeros(0, 5), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert list(empty.shape) == d["empty_batched_keep_shape"].tolist()


@pytest.mark.parametrize("thr", [0.05, 0.3, 0.5, 0.7, 0.95])
def test_nms_rotated_matches_greedy_reference(thr):
    # Mixed sizes including thin boxes and tight clusters, enough boxes for the x-sorted window.
    boxes = torch.cat(
        [
            _random_rotated(250, 8, torch.float64, extent=(400, 300), size=(2, 80)),
            _random_rotated(100, 9, torch.float64, extent=(40, 40), size=(10, 30)),
        ]
    )
    boxes[::7, 3] = 0.5  # thin
    scores = torch.rand(350, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    idxs = torch.randint(0, 3, (350,), generator=torch.Generator().manual_seed(11))
    iou = box_iou_rotated(boxes, boxes)
    assert nms_rotated(boxes, scores, thr).tolist() == _reference_nms(iou, scores, thr)
    assert batched_nms_rotated(boxes, scores, idxs, thr).tolist() == _reference_nms(iou, scores, thr, idxs)


def test_nms_rotated_thresholds_at_and_below_zero():
    boxes = _random_rotated(50, 12)
    scores = torch.rand(50, generator=torch.Generator().manual_seed(12))
    idxs = torch.arange(50) % 4
    top = [int(scores.argmax())]
    for thr in (0.0, -0.5):
        assert nms_rotated(boxes, scores, thr).tolist() == top
        # detectron2's offset trick gives boxes of different categories IoU 0, which is >= thr here too
        assert batched_nms_rotated(boxes, scores, idxs, thr).tolist() == top
    # 1.0 suppresses exact duplicates only
    dup = torch.cat([boxes[:5], boxes[:5]])
    s = torch.arange(10, 0, -1).float()
    assert nms_rotated(dup, s, 1.0).tolist() == _reference_nms(box_iou_rotated(dup, dup), s, 1.0)


def test_nms_rotated_degenerate_and_ties():
    boxes = torch.tensor(
        [
            [0, 0, 10, 10, 0],
            [0, 0, 10, 10, 90],  # same region
            [0, 0, 0, 10, 0],  # zero width: IoU 0 with everything, always kept
            [0, 0, 0, 10, 0],
            [50, 50, 10, 10, 45],
            [50, 50, 10, 10, 45],  # duplicate, tied score
        ],
        dtype=torch.float32,
    )
    scores = torch.tensor([0.5, 0.9, 0.5, 0.5, 0.5, 0.5])
    assert nms_rotated(boxes, scores, 0.5).tolist() == [1, 2, 3, 4]
    assert nms_rotated(boxes[:1], scores[:1], 0.5).tolist() == [0]


def test_nms_rotated_huge_coordinates_and_non_contiguous():
    boxes = _random_rotated(200, 13, torch.float64)
    scores = torch.rand(200, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    shifted = boxes + torch.tensor([1e6, 1e6, 0, 0, 0], dtype=torch.float64)
    assert torch.equal(nms_rotated(shifted, scores, 0.4), nms_rotated(boxes, scores, 0.4))
    wide = torch.zeros(200, 10, dtype=torch.float64)
    wide[:, 1::2] = boxes
    assert torch.equal(nms_rotated(wide[:, 1::2], scores, 0.4), nms_rotated(boxes, scores, 0.4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_nms_rotated_half_precision(dtype):
    boxes = _random_rotated(80, 14).round().to(dtype)
    scores = (torch.randperm(80, generator=torch.Generator().manual_seed(14)).float() / 4).to(dtype)
    assert torch.equal(nms_rotated(boxes, scores, 0.3), nms_rotated(boxes.float(), scores.float(), 0.3))


def test_opcheck():
    a = _random_rotated(8, 15, extent=(40, 40))
    b = _random_rotated(5, 16, extent=(40, 40))
    scores = torch.rand(8, generator=torch.Generator().manual_seed(15))
    idxs = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1])
    torch.library.opcheck(torch.ops.detcore.box_iou_rotated.default, (a, b))
    torch.library.opcheck(torch.ops.detcore.nms_rotated.default, (a, scores, 0.3))
    torch.library.opcheck(torch.ops.detcore.batched_nms_rotated.default, (a, scores, idxs, 0.3))


def test_torch_compile_fullgraph():
    a = _random_rotated(30, 17, extent=(60, 60))
    scores = torch.rand(30, generator=torch.Generator().manual_seed(17))
    idxs = torch.arange(30) % 3

    def fn(b, s, i):
        return box_iou_rotated(b, b).sum(), nms_rotated(b, s, 0.3), batched_nms_rotated(b, s, i, 0.3)

    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        got = torch.compile(fn, fullgraph=True, backend="eager")(a, scores, idxs)
    for x, y in zip(got, fn(a, scores, idxs)):
        assert torch.equal(x, y)


def test_bad_inputs():
    b = _random_rotated(4, 18)
    s = torch.rand(4)
    with pytest.raises(ValueError, match="boxes1"):
        box_iou_rotated(b[:, :4], b)
    with pytest.raises(TypeError, match="boxes2"):
        box_iou_rotated(b, b.long())
    with pytest.raises(ValueError, match="device"):
        box_iou_rotated(b, b.to("meta"))
    with pytest.raises(ValueError, match="boxes"):
        nms_rotated(b[:, :4], s, 0.5)
    with pytest.raises(ValueError, match="scores"):
        nms_rotated(b, s[:3], 0.5)
    with pytest.raises(TypeError, match="iou_threshold"):
        nms_rotated(b, s, None)
    with pytest.raises(TypeError, match="idxs"):
        batched_nms_rotated(b, s, s, 0.5)
    with pytest.raises(ValueError, match="idxs"):
        batched_nms_rotated(b, s, torch.zeros(2, dtype=torch.int64), 0.5)


def test_box_iou_rotated_near_touching_pairs_are_not_pruned():
    # Copies of a box shifted along its own axes by its size plus a small gap (negative: overlap): the cheap
    # bound tests must never zero a pair the exact routine sees as overlapping.
    g = torch.Generator().manual_seed(21)
    rows_a, rows_b, gaps = [], [], []
    for _ in range(40):
        x, y = (torch.rand(2, generator=g, dtype=torch.float64) * 200 - 100).tolist()
        w, h = (torch.rand(2, generator=g, dtype=torch.float64) * 20 + 0.5).tolist()
        ang = float(torch.rand(1, generator=g, dtype=torch.float64)) * 360 - 180
        t = ang * 0.01745329251
        ux, uy, vx, vy = math.cos(t), -math.sin(t), math.sin(t), math.cos(t)
        for gap in (-1e-2, -1e-4, 1e-4, 1e-2):
            for du, dv in ((w + gap, 0.0), (0.0, h + gap), (w + gap, h + gap)):
                rows_a.append([x, y, w, h, ang])
                rows_b.append([x + du * ux + dv * vx, y + du * uy + dv * vy, w, h, ang])
                gaps.append(gap)
    a = torch.tensor(rows_a, dtype=torch.float64)
    b = torch.tensor(rows_b, dtype=torch.float64)
    gaps = torch.tensor(gaps)
    got = box_iou_rotated(a, b).diagonal()
    expected = torch.stack([_reference_iou(a[i : i + 1], b[i : i + 1])[0, 0] for i in range(a.shape[0])])
    # Gaps of 1e-2 px are far beyond detectron2's epsilons: exact agreement with polygon clipping.
    wide = gaps.abs() > 1e-3
    torch.testing.assert_close(got[wide], expected[wide], rtol=0, atol=1e-9)
    # At 1e-4 px detectron2's relaxed comparisons (1e-5 on edge parameters, 1e-6 on hull cross products)
    # blur contact: some separated pairs get a small IoU, some slivers 0 (checked against the unpruned
    # routine while writing this test). That separated pairs still get a nonzero IoU shows the pruning
    # margins exceed detectron2's tolerances, so those pairs reach the exact routine.
    assert (got[gaps == 1e-4] > 0).any()
    assert (got[gaps == -1e-4] > 0).any()
    boxes = torch.cat([a, b])
    scores = torch.arange(boxes.shape[0], dtype=torch.float64)
    keep = nms_rotated(boxes, scores, 1e-7)
    assert keep.tolist() == _reference_nms(box_iou_rotated(boxes, boxes), scores, 1e-7)
