"""torch.export of GeneralizedRCNN inference (Mask R-CNN R-50-FPN) with a dynamic image size.

The whole inference (backbone, RPN with its top-k / NMS, box head with score threshold / per-class NMS,
mask head) is exported once with symbolic H and W (multiples of 32); the program is then run on image sizes
other than the traced one and must give eager's detections. The trained golden tiny model is exported with
post-processing to a dynamic output size (pasted masks) and checked against eager and detectron2. Export is
slow, so each program is built once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detcore.archs import build_model, get_config, load_checkpoint
from detcore.archs.export import ExportableRCNN, export_model

NARROW = [
    "model.backbone.resnet.stem_out_channels=8",
    "model.backbone.resnet.res2_out_channels=16",
    "model.backbone.resnet.width_per_group=4",
    "model.backbone.fpn.out_channels=16",
    "model.roi_heads.box_head.fc_dim=32",
    "model.roi_heads.mask_head.conv_dim=16",
    "model.roi_heads.num_classes=3",
]

TRACED_SIZE = (224, 288)
OTHER_SIZES = [(256, 320), (320, 384), (96, 480)]  # none is the traced size


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(get_config("mask_rcnn_R_50_FPN", NARROW)).eval()


@pytest.fixture(scope="module")
def program(model):
    g = torch.Generator().manual_seed(1)
    example = torch.rand(3, *TRACED_SIZE, generator=g) * 255
    return export_model(model, example, min_size=96, max_size=640)


@pytest.fixture(scope="module")
def exported(program):
    return program.module()


def _eager(model, image):
    with torch.no_grad():
        (r,) = model.inference([{"image": image}], do_postprocess=False)
    return r.pred_boxes.tensor, r.scores, r.pred_classes, r.pred_masks


def _assert_same(got, expected):
    assert len(got) == len(expected) == 4
    for name, a, b in zip(("boxes", "scores", "classes", "masks"), got, expected):
        assert a.shape == b.shape, name
        assert a.dtype == b.dtype, name
        if b.dtype in (torch.int64, torch.bool):
            assert torch.equal(a, b), name
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-4, msg=name)


@pytest.mark.parametrize("size", OTHER_SIZES)
def test_exported_rcnn_matches_eager_on_other_sizes(model, exported, size):
    g = torch.Generator().manual_seed(size[0] * 1000 + size[1])
    image = torch.rand(3, *size, generator=g) * 255
    expected = _eager(model, image)
    assert expected[0].shape[0] > 0  # random R-50 scores clear the 0.05 threshold: real detections to compare
    assert expected[3].shape[1:] == (1, 28, 28)
    with torch.no_grad():
        got = exported(image)
    _assert_same(got, expected)
    boxes = got[0]
    assert bool((boxes[:, 0::2] <= size[1]).all()) and bool((boxes[:, 1::2] <= size[0]).all())


def test_saved_and_loaded_program_gives_the_same_detections(model, program, tmp_path):
    path = tmp_path / "mask_rcnn.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path).module()
    image = torch.rand(3, 192, 256, generator=torch.Generator().manual_seed(4)) * 255
    with torch.no_grad():
        got = loaded(image)
    _assert_same(got, _eager(model, image))


def test_wrapper_equals_inference(model):
    image = torch.rand(3, 128, 160, generator=torch.Generator().manual_seed(3)) * 255
    with torch.no_grad():
        got = ExportableRCNN(model)(image)
    _assert_same(got, _eager(model, image))


def test_graph_has_symbolic_image_size_and_counts(program):
    placeholder = [n for n in program.graph.nodes if n.op == "placeholder"][-1]
    shape = placeholder.meta["val"].shape
    assert shape[0] == 3
    assert not isinstance(shape[1], int) and not isinstance(shape[2], int)  # dynamic H and W
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any("detcore.batched_nms" in t for t in targets)  # NMS is in the graph, not traced out
    out_node = next(n for n in program.graph.nodes if n.op == "output")
    num_dets = out_node.args[0][1].meta["val"].shape[0]
    assert not isinstance(num_dets, int)  # the number of detections is data-dependent


def test_exported_rcnn_rejects_sizes_outside_the_spec(exported):
    with pytest.raises(Exception, match="(?i)(h|w|size|shape|constraint|expected|range|guard)"):
        exported(torch.rand(3, 250, 320) * 255)  # not a multiple of 32
    with pytest.raises(Exception, match="(?i)(h|w|size|shape|constraint|expected|range|guard)"):
        exported(torch.rand(3, 704, 320) * 255)  # above max_size


def test_export_model_validates_arguments(model):
    with pytest.raises(TypeError, match="GeneralizedRCNN"):
        ExportableRCNN(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="example_image must be a Tensor"):
        export_model(model, torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="multiples of 32"):
        export_model(model, torch.rand(3, 100, 128))
    with pytest.raises(ValueError, match="min_size"):
        export_model(model, torch.rand(3, 128, 128), min_size=64)
    with pytest.raises(ValueError, match="output_size"):
        export_model(model, torch.rand(3, 128, 128), output_size=(0, 128))
    with pytest.raises(ValueError, match="height and width"):
        ExportableRCNN(model)(torch.rand(3, 128, 128), height=128)


# ---- the trained golden tiny model: real detections, real masks ----


def _golden_image(golden_dir, name):
    d = np.load(golden_dir / f"{name}.npz")
    return d, torch.as_tensor(d["input_bgr_resized"].transpose(2, 0, 1).astype("float32"))


def test_exported_golden_model_with_postprocess_matches_eager_and_detectron2(golden_dir, tiny_overrides):
    model = build_model(get_config("mask_rcnn_R_50_FPN", tiny_overrides)).eval()
    assert load_checkpoint(model, golden_dir / "model.pth", strict=True).ok
    _, traced = _golden_image(golden_dir, "00000")  # 256x320, output 256x320
    program = export_model(model, traced, min_size=96, max_size=512, output_size=(256, 320)).module()
    # 00004 is 256x384 with output 240x360 (neither traced); blank_flat has no detection (empty outputs)
    for name, num_dets in (("00004", 53), ("blank_flat", 0)):
        d, image = _golden_image(golden_dir, name)
        height, width = (int(v) for v in d["original_size"])
        with torch.no_grad():
            (ref,) = model([{"image": image, "height": height, "width": width}])
            got = program(image, height, width)
        ref = ref["instances"]
        _assert_same(got, (ref.pred_boxes.tensor, ref.scores, ref.pred_classes, ref.pred_masks))
        assert got[0].shape[0] == num_dets == d["final/pred_boxes"].shape[0]
        assert got[3].shape == (num_dets, height, width) and got[3].dtype == torch.bool
        # and detectron2's final outputs, at the tolerances of test_golden.py
        torch.testing.assert_close(got[0], torch.as_tensor(d["final/pred_boxes"]), atol=1e-2, rtol=0)
        torch.testing.assert_close(got[1], torch.as_tensor(d["final/scores"]), atol=1e-4, rtol=0)
        assert torch.equal(got[2], torch.as_tensor(d["final/pred_classes"]).to(torch.int64))
        if num_dets:
            differ = (got[3].to(torch.uint8) != torch.as_tensor(d["final/pred_masks"])).float().mean().item()
            assert differ <= 1e-4
