"""detcore.ops.box_iou against torchvision and a float64 reference with detectron2's empty-box rule."""

from __future__ import annotations

import pytest
import torch
import torchvision

from detcore.ops import box_iou


def _random_boxes(
    n: int, seed: int, dtype: torch.dtype = torch.float32, scale: float = 100.0
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale / 3 + 0.5
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def _reference_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """float64 pairwise IoU, 0 where the intersection is empty (detectron2's pairwise_iou)."""
    a, b = a.double(), b.double()
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64)
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            w = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
            h = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
            inter = float(w * h)
            if inter > 0:
                area_a = float((a[i, 2] - a[i, 0]) * (a[i, 3] - a[i, 1]))
                area_b = float((b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1]))
                out[i, j] = inter / (area_a + area_b - inter)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1), (37, 5), (300, 20), (5, 300)])
def test_matches_torchvision_exactly(dtype, shape):
    a = _random_boxes(shape[0], 0, dtype)
    b = _random_boxes(shape[1], 1, dtype)
    got = box_iou(a, b)
    assert got.dtype == dtype and got.shape == shape
    assert torch.equal(got, torchvision.ops.box_iou(a, b))


def test_matches_float64_reference():
    a = _random_boxes(40, 2, torch.float64)
    b = _random_boxes(25, 3, torch.float64)
    torch.testing.assert_close(box_iou(a, b), _reference_iou(a, b), rtol=0, atol=1e-15)


def test_large_parallel_input_matches_torchvision():
    # Enough rows to be split across threads.
    a = _random_boxes(5000, 4, scale=800.0)
    b = _random_boxes(20, 5, scale=800.0)
    assert torch.equal(box_iou(a, b), torchvision.ops.box_iou(a, b))


def test_empty_and_degenerate_boxes_give_zero():
    a = torch.tensor(
        [
            [0, 0, 10, 10],
            [5, 5, 5, 5],  # zero area
            [10, 10, 0, 0],  # negative size
            [20, 20, 30, 30],  # disjoint from the rest
            [0, 0, 10, 10],
        ],
        dtype=torch.float32,
    )
    got = box_iou(a, a)
    expected = _reference_iou(a, a).float()
    assert torch.equal(got, expected)
    assert got[1, 1] == 0 and got[2, 2] == 0  # torchvision gives nan (0 / 0) and 0 here
    assert torch.isnan(torchvision.ops.box_iou(a, a)[1, 1])
    assert got[0, 4] == 1 and got[0, 3] == 0
    # Touching boxes (shared edge) have zero intersection.
    assert box_iou(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([[1.0, 0, 2, 1]])).item() == 0
    assert box_iou(torch.zeros(0, 4), a).shape == (0, 5)
    assert box_iou(a, torch.zeros(0, 4)).shape == (5, 0)


def test_huge_coordinates_and_non_contiguous():
    a = _random_boxes(64, 6) + 1e6
    b = _random_boxes(16, 7) + 1e6
    assert torch.equal(box_iou(a, b), torchvision.ops.box_iou(a, b))
    wide = torch.zeros(64, 8)
    wide[:, 1::2] = a
    assert not wide[:, 1::2].is_contiguous()
    assert torch.equal(box_iou(wide[:, 1::2], b.t().contiguous().t()), torchvision.ops.box_iou(a, b))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(dtype):
    a = _random_boxes(30, 8).round().to(dtype)
    b = _random_boxes(12, 9).round().to(dtype)
    got = box_iou(a, b)
    assert got.dtype == dtype
    assert torch.equal(got, box_iou(a.float(), b.float()).to(dtype))


def test_mixed_dtypes_promote():
    a = _random_boxes(10, 10)
    b = _random_boxes(7, 11, torch.float64)
    got = box_iou(a, b)
    assert got.dtype == torch.float64
    assert torch.equal(got, torchvision.ops.box_iou(a.double(), b))


def test_opcheck():
    torch.library.opcheck(torch.ops.detcore.box_iou.default, (_random_boxes(6, 0), _random_boxes(4, 1)))


def test_torch_compile_fullgraph():
    a = _random_boxes(12, 0)
    b = _random_boxes(5, 1)

    def fn(x, y):
        return box_iou(x, y).max(dim=1).values

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="eager")
    assert torch.equal(compiled(a, b), fn(a, b))


def test_bad_inputs():
    a = _random_boxes(3, 0)
    with pytest.raises(TypeError, match="boxes1"):
        box_iou(a.numpy(), a)
    with pytest.raises(ValueError, match="boxes1"):
        box_iou(a[:, :2], a)
    with pytest.raises(ValueError, match="boxes2"):
        box_iou(a, a[None])
    with pytest.raises(TypeError, match="boxes2"):
        box_iou(a, a.int())
    with pytest.raises(ValueError, match="device"):
        box_iou(a, a.to("meta"))
