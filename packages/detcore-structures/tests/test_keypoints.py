from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from detcore.structures import Boxes, Keypoints, heatmaps_to_keypoints, keypoints_to_heatmap


def ref_heatmaps_to_keypoints(maps: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    """Float64 reference of detectron2's decoding: bicubic resize to the ceil'd box size, full softmax
    map normalised by the pooled map's partition function, argmax, (d + 0.5) * size / ceil(size) + x0."""
    maps = maps.double()
    rois = rois.double()
    out = torch.zeros(maps.shape[0], maps.shape[1], 4, dtype=torch.float64)
    for i in range(maps.shape[0]):
        x0, y0, x1, y1 = rois[i].tolist()
        w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        wc, hc = math.ceil(w), math.ceil(h)
        up = F.interpolate(maps[i : i + 1], size=(hc, wc), mode="bicubic", align_corners=False)[0]
        for k in range(maps.shape[1]):
            m = up[k]
            mx = m.max()
            scores = (m - mx).exp() / (maps[i, k] - mx).exp().sum()
            pos = int(m.reshape(-1).argmax())
            yi, xi = divmod(pos, wc)
            out[i, k] = torch.tensor(
                [(xi + 0.5) * w / wc + x0, (yi + 0.5) * h / hc + y0, float(m[yi, xi]), float(scores[yi, xi])],
                dtype=torch.float64,
            )
    return out


def test_keypoints_basics():
    t = torch.rand(3, 17, 3)
    k = Keypoints(t)
    assert len(k) == 3 and repr(k) == "Keypoints(num_instances=3)"
    assert torch.equal(k[1].tensor, t[1:2])
    assert torch.equal(k[0:2].tensor, t[0:2])
    assert torch.equal(k[torch.tensor([True, False, True])].tensor, t[[0, 2]])
    assert torch.equal(k[torch.tensor([2, 0])].tensor, t[[2, 0]])
    assert torch.equal(Keypoints.cat([k[0:1], k[1:]]).tensor, t)
    assert k.to(torch.float64).tensor.dtype == torch.float32  # Keypoints are always float32 (detectron2)
    assert Keypoints([[[1, 2, 2]]]).tensor.dtype == torch.float32
    assert Keypoints([]).tensor.shape == (0, 0, 3)
    assert k.device.type == "cpu"
    with pytest.raises(ValueError, match=r"Keypoints: keypoints must have shape \[N, K, 3\]"):
        Keypoints(torch.zeros(3, 17, 2))


def test_to_heatmap_hand_computed():
    # box [10, 20, 30, 60]: heatmap 4 -> x bins of 5 px, y bins of 10 px
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    kp = torch.tensor(
        [
            [
                [10.0, 20.0, 2.0],  # top-left corner: bin (0, 0)
                [24.9, 45.0, 1.0],  # x bin 2, y bin 2 -> 2 * 4 + 2
                [30.0, 60.0, 2.0],  # exactly on the right/bottom edge: last bin (3, 3)
                [31.0, 30.0, 2.0],  # outside: invalid
                [15.0, 30.0, 0.0],  # not labeled: invalid
                [9.99, 30.0, 2.0],  # just left: invalid
            ]
        ]
    )
    heatmaps, valid = Keypoints(kp).to_heatmap(boxes, 4)
    assert heatmaps.dtype == torch.long and valid.dtype == torch.long
    assert valid.tolist() == [[1, 1, 1, 0, 0, 0]]
    assert heatmaps.tolist() == [[0, 10, 15, 0, 0, 0]]
    h2, v2 = Keypoints(kp).to_heatmap(Boxes(boxes), 4)
    assert torch.equal(h2, heatmaps) and torch.equal(v2, valid)


def test_to_heatmap_empty_and_errors():
    h, v = keypoints_to_heatmap(torch.zeros(0, 17, 3), torch.zeros(0, 4), 56)
    assert h.numel() == 0 and v.numel() == 0 and h.dtype == torch.long
    with pytest.raises(ValueError, match="same length"):
        keypoints_to_heatmap(torch.zeros(2, 17, 3), torch.zeros(3, 4), 56)
    with pytest.raises(ValueError, match=r"rois must be a Tensor\[N, 4\]"):
        keypoints_to_heatmap(torch.zeros(2, 17, 3), torch.zeros(2, 5), 56)


def test_heatmaps_to_keypoints_hand_computed():
    # box of exactly the map size: bicubic resize is the identity, so the argmax pixel is the peak
    maps = torch.zeros(1, 2, 6, 8)
    maps[0, 0, 2, 5] = 4.0
    maps[0, 1, 4, 1] = 2.0
    rois = torch.tensor([[100.0, 200.0, 108.0, 206.0]])
    out = heatmaps_to_keypoints(maps, rois)
    assert out.shape == (1, 2, 4)
    score0 = 1.0 / (math.exp(0.0) + 47 * math.exp(-4.0))
    score1 = 1.0 / (math.exp(0.0) + 47 * math.exp(-2.0))
    expected = torch.tensor([[[105.5, 202.5, 4.0, score0], [101.5, 204.5, 2.0, score1]]])
    torch.testing.assert_close(out, expected)


def test_heatmaps_to_keypoints_vs_reference():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(5, 3, 14, 14, generator=g)
    rois = torch.tensor(
        [
            [10.0, 20.0, 60.3, 47.9],
            [0.0, 0.0, 0.4, 0.2],  # degenerate: sides clamped to 1
            [5.5, 5.5, 30.0, 100.0],
            [-10.0, -20.0, 3.0, 7.0],
            [100.0, 50.0, 114.0, 64.0],
        ]
    )
    out = heatmaps_to_keypoints(maps, rois)
    torch.testing.assert_close(out.double(), ref_heatmaps_to_keypoints(maps, rois), atol=1e-4, rtol=1e-4)
    out64 = heatmaps_to_keypoints(maps.double(), rois.double())
    torch.testing.assert_close(out64, ref_heatmaps_to_keypoints(maps, rois))
    assert heatmaps_to_keypoints(torch.zeros(0, 3, 14, 14), torch.zeros(0, 4)).shape == (0, 3, 4)


def test_heatmaps_roundtrip_with_to_heatmap():
    # a keypoint encoded into a heatmap bin and decoded from a one-hot map of that bin returns the bin centre
    boxes = torch.tensor([[10.0, 20.0, 66.0, 76.0]])  # 56 x 56: one pixel per bin at heatmap size 56
    kp = torch.tensor([[[33.2, 51.7, 2.0]]])
    heat, valid = keypoints_to_heatmap(kp, boxes, 56)
    assert valid.item() == 1
    maps = torch.full((1, 1, 56, 56), -10.0)
    maps.view(1, 1, -1)[0, 0, heat.item()] = 10.0
    out = heatmaps_to_keypoints(maps, boxes)
    torch.testing.assert_close(out[0, 0, :2], torch.tensor([33.5, 51.5]))


def test_heatmaps_to_keypoints_errors():
    with pytest.raises(ValueError, match=r"maps must be a Tensor\[R, K, H, W\]"):
        heatmaps_to_keypoints(torch.zeros(2, 3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="same length"):
        heatmaps_to_keypoints(torch.zeros(2, 3, 4, 4), torch.zeros(1, 4))
