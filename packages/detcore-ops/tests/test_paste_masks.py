"""detcore.ops.paste_masks_in_image against detectron2's golden outputs and a grid_sample reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import detcore.ops.paste_masks as paste_module
from detcore.ops import paste_masks_in_image


def _golden(name: str) -> dict[str, np.ndarray]:
    for parent in Path(__file__).resolve().parents:
        path = parent / "shared" / "reference" / "golden" / "ops" / name
        if path.exists():
            return dict(np.load(path))
    pytest.fail(f"golden file {name} not found above {__file__}")


def _reference_soft(masks: torch.Tensor, boxes: torch.Tensor, h: int, w: int, region=None) -> torch.Tensor:
    """detectron2's CPU algorithm in pure PyTorch: per box, grid_sample over its skip_empty pixel range.

    Pixels outside that range are 0 and never thresholded; ``region`` (bool [N, h, w]) receives the range.
    """
    out = torch.zeros(masks.shape[0], h, w, dtype=masks.dtype)
    for i in range(masks.shape[0]):
        x0, y0, x1, y1 = boxes[i].tolist()
        if not all(np.isfinite([x0, y0, x1, y1])):
            continue
        xs, xe = max(int(np.floor(x0)) - 1, 0), min(int(np.ceil(x1)) + 1, w)
        ys, ye = max(int(np.floor(y0)) - 1, 0), min(int(np.ceil(y1)) + 1, h)
        if xe <= xs or ye <= ys:
            continue
        b = boxes[i : i + 1]
        img_y = torch.arange(ys, ye, dtype=torch.float32) + 0.5
        img_x = torch.arange(xs, xe, dtype=torch.float32) + 0.5
        gy = (img_y - b[:, 1:2]) / (b[:, 3:4] - b[:, 1:2]) * 2 - 1
        gx = (img_x - b[:, 0:1]) / (b[:, 2:3] - b[:, 0:1]) * 2 - 1
        grid = torch.stack(
            [gx[:, None, :].expand(1, ye - ys, xe - xs), gy[:, :, None].expand(1, ye - ys, xe - xs)], 3
        )
        if region is not None:
            region[i, ys:ye, xs:xe] = True
        out[i, ys:ye, xs:xe] = F.grid_sample(
            masks[i : i + 1, None], grid.to(masks.dtype), align_corners=False
        )[0, 0]
    return out


def _random_case(n: int, seed: int, h: int, w: int, mask_size=(28, 28), dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, *mask_size, generator=g, dtype=dtype)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 1.1, h * 1.1]) - torch.tensor([w * 0.05, h * 0.05])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6]) + 0.2
    return masks, torch.cat([xy, xy + wh], 1)


class _Boxes:
    """Stands in for detectron2's Boxes: an object with a .tensor attribute."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


@pytest.fixture(params=["written", "lazy_zero"])
def output_mode(request, monkeypatch):
    """Runs a test with every output written by the kernel (small outputs) and with every output a lazily
    zeroed mapping where only box pixels are written (outputs of at least 1 MiB)."""
    monkeypatch.setattr(paste_module, "_LAZY_ZERO_BYTES", 1 << 62 if request.param == "written" else 0)
    return request.param


def test_matches_golden(output_mode):
    d = _golden("paste_masks_in_image.npz")
    masks, boxes = torch.from_numpy(d["masks"]), torch.from_numpy(d["boxes"])
    shape = tuple(int(v) for v in d["image_shape"])
    for key, thr in (("pasted_threshold_0.5", 0.5), ("pasted_threshold_0.3", 0.3)):
        got = paste_masks_in_image(masks, boxes, shape, thr)
        assert got.dtype == torch.bool and got.shape == (6, *shape)
        assert torch.equal(got, torch.from_numpy(d[key]).bool())
    soft = paste_masks_in_image(masks, boxes, shape, -1)
    assert soft.dtype == torch.uint8
    assert torch.equal(soft, torch.from_numpy(d["pasted_soft"]))


def test_matches_golden_edge_cases(output_mode):
    d = _golden("paste_masks_in_image_edge.npz")
    boxes = _Boxes(torch.from_numpy(d["boxes"]))
    shape = tuple(int(v) for v in d["image_shape"])
    for name in ("masks28", "masks14", "disc28"):
        masks = torch.from_numpy(d[name])
        got = paste_masks_in_image(masks, boxes, shape, 0.5)
        assert torch.equal(got, torch.from_numpy(d[f"{name}_pasted_threshold_0.5"]).bool()), name
        if f"{name}_pasted_soft" in d:
            assert torch.equal(
                paste_masks_in_image(masks, boxes, shape, -1.0), torch.from_numpy(d[f"{name}_pasted_soft"])
            )
    empty = paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), shape)
    assert list(empty.shape) == d["empty_pasted_shape"].tolist()


def test_boxes_outside_the_image_give_zero_masks(output_mode):
    # detectron2 raises for these ("upper bound and lower bound inconsistent with step sign"); we paste nothing.
    d = _golden("paste_masks_in_image_edge.npz")
    boxes = torch.stack(
        [torch.from_numpy(d["outside_top_left_box"]), torch.from_numpy(d["outside_bottom_right_box"])]
    )
    assert "inconsistent" in str(d["outside_top_left_error"])
    masks = torch.ones(2, 28, 28)
    got = paste_masks_in_image(masks, boxes, (97, 131), 0.5)
    assert got.shape == (2, 97, 131) and not got.any()
    assert not paste_masks_in_image(masks, boxes, (97, 131), -1).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask_size", [(28, 28), (14, 14), (7, 19)])
def test_matches_grid_sample_reference(dtype, mask_size, output_mode):
    masks, boxes = _random_case(24, 3, 90, 120, mask_size, dtype)
    soft = _reference_soft(masks, boxes, 90, 120)
    got_soft = paste_masks_in_image(masks, boxes, (90, 120), -1)
    expected_soft = (soft * 255).to(torch.uint8)
    got_bin = paste_masks_in_image(masks, boxes, (90, 120), 0.5)
    if dtype == torch.float64:
        assert torch.equal(got_soft, expected_soft)
        assert torch.equal(got_bin, soft >= 0.5)
    else:
        # PyTorch's float32 grid_sample rounding depends on the CPU (FMA or not): allow 1 unit / near-ties.
        assert (got_soft.int() - expected_soft.int()).abs().max() <= 1
        assert torch.equal(got_bin | ((soft - 0.5).abs() < 1e-6), (soft >= 0.5) | ((soft - 0.5).abs() < 1e-6))


def test_large_output_matches_reference():
    # 3 x 700 x 600 bytes: above the default lazy-zero size, so only box pixels are written.
    masks, boxes = _random_case(3, 6, 700, 600, dtype=torch.float64)
    assert paste_module._LAZY_ZERO_BYTES <= 3 * 700 * 600
    soft = _reference_soft(masks, boxes, 700, 600)
    assert torch.equal(paste_masks_in_image(masks, boxes, (700, 600), 0.5), soft >= 0.5)
    got_soft = paste_masks_in_image(masks, boxes, (700, 600), -1)
    assert got_soft.is_contiguous() and torch.equal(got_soft, (soft * 255).to(torch.uint8))
    got_soft[:, 0, 0] = 7  # an ordinary writable tensor
    assert got_soft[:, 0, 0].tolist() == [7, 7, 7]


def test_hand_computed_constant_mask(output_mode):
    masks = torch.ones(1, 28, 28)
    boxes = torch.tensor([[10.0, 20.0, 40.0, 30.0]])
    got = paste_masks_in_image(masks, boxes, (50, 60), 0.5)
    expected = torch.zeros(1, 50, 60, dtype=torch.bool)
    expected[0, 20:30, 10:40] = True  # pixel centres inside the box see a full-weight mask
    assert torch.equal(got, expected)
    soft = paste_masks_in_image(masks, boxes, (50, 60), -1)
    # x: 28 cells over 30 px, mask coordinate (x + 0.5 - 10) * 28 / 30 - 0.5. Pixel 9 -> -0.9667: only cell 0
    # with weight 1/30 (8.5 -> 8); pixel 39 -> 27.033: cell 27 with weight 29/30 (246.5 -> 246);
    # pixel 40 -> 27.967: weight 1/30 again; pixel 8 -> -1.9: nothing. y: 28 cells over 10 px, pixel 19
    # -> -1.9: nothing, pixel 20 -> 0.9: full weight.
    assert soft[0, 25, 25] == 255
    assert [int(soft[0, 25, x]) for x in (8, 9, 39, 40, 41)] == [0, 8, 246, 8, 0]
    assert int(soft[0, 19, 25]) == 0 and int(soft[0, 20, 25]) == 255


def test_threshold_zero_and_mask_dtypes():
    masks, boxes = _random_case(6, 4, 40, 50)
    region = torch.zeros(6, 40, 50, dtype=torch.bool)
    soft = _reference_soft(masks, boxes, 40, 50, region)
    assert torch.equal(paste_masks_in_image(masks, boxes, (40, 50), 0.0), (soft >= 0) & region)
    assert 0 < region.sum() < region.numel()
    for dtype in (torch.float16, torch.bfloat16):
        got = paste_masks_in_image(masks.to(dtype), boxes, (40, 50), 0.5)
        assert torch.equal(got, paste_masks_in_image(masks.to(dtype).float(), boxes, (40, 50), 0.5))
    binary = masks > 0.5
    for m in (binary, binary.to(torch.uint8)):
        assert torch.equal(
            paste_masks_in_image(m, boxes, (40, 50), 0.5),
            paste_masks_in_image(binary.float(), boxes, (40, 50), 0.5),
        )
    assert torch.equal(
        paste_masks_in_image(masks, boxes.double(), (40, 50), -1),
        (_reference_soft(masks, boxes.double(), 40, 50) * 255).to(torch.uint8),
    )


def test_non_contiguous_and_huge_boxes(output_mode):
    masks, boxes = _random_case(5, 5, 30, 40)
    wide = torch.zeros(5, 28, 56)
    wide[:, :, ::2] = masks
    strided_boxes = torch.zeros(5, 8)
    strided_boxes[:, ::2] = boxes
    assert torch.equal(
        paste_masks_in_image(wide[:, :, ::2], strided_boxes[:, ::2], (30, 40), 0.5),
        paste_masks_in_image(masks, boxes, (30, 40), 0.5),
    )
    huge = torch.tensor([[-1e6, -1e6, 1e6, 1e6], [1e6, 1e6, 2e6, 2e6], [0.0, 0.0, 1e6, 1e6]])
    got = paste_masks_in_image(masks[:3], huge, (30, 40), -1)
    assert torch.equal(got, (_reference_soft(masks[:3], huge, 30, 40) * 255).to(torch.uint8))
    assert not got[1].any()


def test_opcheck(output_mode):
    masks, boxes = _random_case(3, 6, 20, 24, (8, 8))
    torch.library.opcheck(torch.ops.detcore.paste_masks_in_image.default, (masks, boxes, 20, 24, 0.5))
    torch.library.opcheck(torch.ops.detcore.paste_masks_in_image.default, (masks, boxes, 20, 24, -1.0))


def test_torch_compile_fullgraph():
    masks, boxes = _random_case(4, 7, 30, 30, (8, 8))

    def fn(m, b):
        return paste_masks_in_image(m, b, (30, 30), 0.5).sum(dim=(1, 2))

    torch._dynamo.reset()
    assert torch.equal(torch.compile(fn, fullgraph=True, backend="eager")(masks, boxes), fn(masks, boxes))


def test_bad_inputs():
    masks, boxes = _random_case(2, 8, 10, 10)
    with pytest.raises(ValueError, match="masks"):
        paste_masks_in_image(masks[0], boxes, (10, 10))
    with pytest.raises(TypeError, match="masks"):
        paste_masks_in_image(masks.int(), boxes, (10, 10))
    with pytest.raises(ValueError, match="masks"):
        paste_masks_in_image(masks[:, :0], boxes, (10, 10))
    with pytest.raises(ValueError, match="boxes"):
        paste_masks_in_image(masks, boxes[:, :3], (10, 10))
    with pytest.raises(ValueError, match="boxes"):
        paste_masks_in_image(masks, boxes[:1], (10, 10))
    with pytest.raises(TypeError, match="boxes"):
        paste_masks_in_image(masks, boxes.long(), (10, 10))
    with pytest.raises(TypeError, match="boxes"):
        paste_masks_in_image(masks, [[0, 0, 1, 1]] * 2, (10, 10))
    with pytest.raises(ValueError, match="device"):
        paste_masks_in_image(masks, boxes.to("meta"), (10, 10))
    for shape in ((0, 10), (10, -1)):
        with pytest.raises(ValueError, match="image_shape"):
            paste_masks_in_image(masks, boxes, shape)
    for shape in ((10.5, 10), (10,), "ab", (10, 10, 3), 10, (True, 10)):
        with pytest.raises(TypeError, match="image_shape"):
            paste_masks_in_image(masks, boxes, shape)
    with pytest.raises(TypeError, match="threshold"):
        paste_masks_in_image(masks, boxes, (10, 10), "0.5")
