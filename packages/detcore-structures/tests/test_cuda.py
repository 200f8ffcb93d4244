"""The structures on CUDA tensors (pure PyTorch parts); skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

from detcore.structures import BitMasks, Boxes, ImageList, Instances, Keypoints, RotatedBoxes, pairwise_iou
from detcore.structures.keypoints import heatmaps_to_keypoints

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_boxes_and_iou_on_cuda_match_cpu():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 100
    a = torch.cat([xy, xy + torch.rand(300, 2, generator=g) * 30], 1)
    b = a[:17] + 1.0
    gpu = pairwise_iou(Boxes(a).to("cuda"), Boxes(b).to("cuda"))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), pairwise_iou(Boxes(a), Boxes(b)))
    boxes = Boxes(a.cuda())
    boxes.clip((50, 60))
    assert boxes.device.type == "cuda" and boxes[boxes.nonempty()].tensor.is_cuda
    assert RotatedBoxes(torch.rand(3, 5)).to("cuda").tensor.is_cuda


def test_instances_image_list_masks_keypoints_to_cuda():
    inst = Instances((10, 12), boxes=Boxes(torch.rand(3, 4)), masks=BitMasks(torch.ones(3, 10, 12)))
    moved = inst.to("cuda")
    assert moved.boxes.device.type == "cuda" and moved.masks.device.type == "cuda"
    assert moved[torch.tensor([True, False, True], device="cuda")].boxes.tensor.shape == (2, 4)
    il = ImageList.from_tensors([torch.rand(3, 5, 7, device="cuda"), torch.rand(3, 9, 4, device="cuda")], 4)
    assert il.tensor.is_cuda and il.tensor.shape == (2, 3, 12, 8)
    assert (
        BitMasks(torch.ones(2, 4, 4, device="cuda")).get_bounding_boxes().tensor.tolist()
        == [[0, 0, 4, 4]] * 2
    )
    kp = Keypoints(torch.rand(2, 5, 3, device="cuda") * 10)
    heat, valid = kp.to_heatmap(torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 2, device="cuda"), 8)
    assert heat.is_cuda and valid.is_cuda
    maps = torch.randn(2, 5, 14, 14)
    rois = torch.tensor([[0.0, 0.0, 20.0, 30.0], [5.0, 5.0, 9.5, 40.0]])
    torch.testing.assert_close(
        heatmaps_to_keypoints(maps.cuda(), rois.cuda()).cpu(),
        heatmaps_to_keypoints(maps, rois),
        atol=1e-4,
        rtol=1e-4,
    )
