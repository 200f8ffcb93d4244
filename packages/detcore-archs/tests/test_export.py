"""torch.export of GeneralizedRCNN with a dynamic image size (H, W multiples of 32).

What exports today is the dense stage of inference: normalisation, ResNet + FPN backbone, RPN head and
anchors; the exported program equals eager on image sizes other than the traced one. The proposal selection
(data-dependent filtering and NMS) and the ROI heads do not export yet."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from detcore.archs import build_model, get_config

NARROW = [
    "model.backbone.resnet.stem_out_channels=8",
    "model.backbone.resnet.res2_out_channels=16",
    "model.backbone.resnet.width_per_group=4",
    "model.backbone.fpn.out_channels=16",
    "model.roi_heads.box_head.fc_dim=32",
    "model.roi_heads.mask_head.conv_dim=16",
    "model.roi_heads.num_classes=3",
]


class DenseStage(nn.Module):
    """The per-pixel part of a GeneralizedRCNN's inference on a padded batch [N, 3, H, W] (H, W multiples of
    the backbone's size divisibility): FPN features, RPN objectness logits and deltas, anchors, as plain
    tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        m = self.model
        x = (images - m.pixel_mean) / m.pixel_std
        features = m.backbone(x)
        pg = m.proposal_generator
        feats = [features[f] for f in pg.in_features]
        logits, deltas = pg.rpn_head(feats)
        anchors = [a.tensor for a in pg.anchor_generator(feats)]
        return (*[features[f] for f in sorted(features)], *logits, *deltas, *anchors)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(get_config("mask_rcnn_R_50_FPN", NARROW)).eval()


def test_dense_stage_exports_with_dynamic_image_size(model):
    wrapper = DenseStage(model)
    h = torch.export.Dim("H", min=3, max=32)
    w = torch.export.Dim("W", min=3, max=32)
    g = torch.Generator().manual_seed(0)
    example = torch.rand(1, 3, 96, 128, generator=g) * 255
    ep = torch.export.export(wrapper, (example,), dynamic_shapes={"images": {2: 32 * h, 3: 32 * w}})
    exported = ep.module()
    for size in ((160, 96), (224, 320)):  # neither is the traced size
        x = torch.rand(1, 3, *size, generator=g) * 255
        with torch.no_grad():
            expected = wrapper(x)
            got = exported(x)
        assert len(got) == len(expected)
        assert expected[0].shape[-2:] == (size[0] // 4, size[1] // 4)  # p2
        for a, b in zip(expected, got):
            assert a.shape == b.shape
            torch.testing.assert_close(b, a, rtol=0, atol=0)
