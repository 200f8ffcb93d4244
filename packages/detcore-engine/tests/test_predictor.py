"""DefaultPredictor: resizing, original size passed on, eval mode / no_grad, weights loading, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from detcore.archs import build_model, get_config, is_optimized_for_inference
from detcore.engine.predictor import DefaultPredictor

TINY = [
    "model.backbone.resnet.stem_out_channels=8",
    "model.backbone.resnet.res2_out_channels=16",
    "model.backbone.resnet.width_per_group=4",
    "model.backbone.fpn.out_channels=16",
    "model.roi_heads.box_head.fc_dim=32",
    "model.roi_heads.mask_head.conv_dim=16",
    "model.roi_heads.num_classes=3",
    "model.proposal_generator.pre_nms_topk_test=100",
    "model.proposal_generator.post_nms_topk_test=50",
    "input.min_size_test=128",
    "input.max_size_test=200",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: the test machine's cores are shared, oversubscription makes runs slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _Recorder(nn.Module):
    """Records its inputs, grad mode and training flag."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, batched):
        self.calls.append((batched, torch.is_grad_enabled(), self.training))
        return [{"echo": batched[0]["image"]}]


def _cfg(*extra):
    return get_config("mask_rcnn_R_50_FPN", [*TINY, *extra])


def test_resizes_shortest_edge_and_passes_original_size():
    torch.manual_seed(0)
    pred = DefaultPredictor(_cfg())
    rec = _Recorder().train()
    pred.model = rec
    img = np.random.default_rng(0).integers(0, 256, size=(96, 120, 3), dtype=np.uint8)
    pred(img)
    (batched, grad, training) = rec.calls[0]
    assert batched[0]["height"] == 96 and batched[0]["width"] == 120
    # short edge 96 -> 128 (scale 4/3): width 160 <= max 200
    assert tuple(batched[0]["image"].shape) == (3, 128, 160)
    assert batched[0]["image"].dtype == torch.uint8
    assert not grad and not training
    assert rec.training  # mode restored


def test_max_size_limits_long_edge_and_no_resize_keeps_pixels():
    pred = DefaultPredictor(_cfg())
    pred.model = _Recorder()
    img = np.random.default_rng(1).integers(0, 256, size=(64, 256, 3), dtype=np.uint8)
    pred(img)
    # short 64 -> 128 gives long 512 > 200: scale 200/256 -> (50, 200)
    assert tuple(pred.model.calls[0][0][0]["image"].shape) == (3, 50, 200)

    pred0 = DefaultPredictor(_cfg("input.min_size_test=0"))
    pred0.model = _Recorder()
    out = pred0(img)
    # min_size_test=0: no resize, channels passed through unchanged (BGR stays BGR)
    assert torch.equal(out["echo"], torch.from_numpy(img).permute(2, 0, 1))


def test_matches_direct_model_call_and_loads_weights(tmp_path):
    torch.manual_seed(0)
    cfg = _cfg()
    model = build_model(cfg).eval()
    path = tmp_path / "w.pth"
    torch.save({"model": model.state_dict(), "iteration": 3}, path)
    pred = DefaultPredictor(cfg, path, optimize=False)
    for k, v in model.state_dict().items():
        assert torch.equal(pred.model.state_dict()[k], v), k
    img = np.random.default_rng(2).integers(0, 256, size=(100, 140, 3), dtype=np.uint8)
    out = pred(img)
    inst = out["instances"]
    assert inst.image_size == (100, 140)
    assert not inst.pred_boxes.tensor.requires_grad
    from detcore.engine.data.transforms.augmentation import ResizeShortestEdge

    resized = ResizeShortestEdge([128, 128], 200).get_transform(img).apply_image(img)
    with torch.no_grad():
        ref = model(
            [{"image": torch.from_numpy(resized.copy()).permute(2, 0, 1), "height": 100, "width": 140}]
        )
    torch.testing.assert_close(inst.pred_boxes.tensor, ref[0]["instances"].pred_boxes.tensor)
    torch.testing.assert_close(inst.scores, ref[0]["instances"].scores)
    # the default predictor runs the optimize_for_inference model: same detections within float32 rounding
    fast = DefaultPredictor(cfg, path)
    assert is_optimized_for_inference(fast.model) and not is_optimized_for_inference(pred.model)
    fast_inst = fast(img)["instances"]
    torch.testing.assert_close(fast_inst.pred_boxes.tensor, inst.pred_boxes.tensor, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(fast_inst.scores, inst.scores, rtol=1e-4, atol=1e-4)


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file"):
        DefaultPredictor(_cfg(), tmp_path / "missing.pth")
    with pytest.raises(TypeError, match="Config"):
        DefaultPredictor(_cfg().model)
    pred = DefaultPredictor(_cfg())
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        pred(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        pred(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="numpy array"):
        pred(torch.zeros(10, 10, 3, dtype=torch.uint8))
