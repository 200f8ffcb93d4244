"""R-50-FPN backbone forward (eval, 1x3x800x1344, CPU): detcore vs torchvision's resnet_fpn_backbone.

Both have the same widths (ResNet-50, FPN 256, P6 max-pool level) and FrozenBatchNorm2d; torchvision's is
``resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=0)``. The second row times
detcore after ``fuse_for_inference(channels_last=True)`` (FrozenBN folded into the convs, channels-last
weights) against the same torchvision backbone. Timings alternate between the two models (median of
repeats) so that machine load affects both alike.
"""

from __future__ import annotations

import torch
from _timing import interleaved_medians

__all__ = ["run"]


def _randomize_frozen_bn(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if all(hasattr(m, a) for a in ("weight", "bias", "running_mean", "running_var")) and not isinstance(
            m, torch.nn.Conv2d
        ):
            c = m.running_mean.numel()
            m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
            m.bias.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)


def run(report, height: int = 800, width: int = 1344, repeats: int = 5) -> None:
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    from detcore.backbones import ResNetFPNConfig, build_resnet_fpn_backbone

    torch.set_num_threads(2)
    torch.manual_seed(0)
    x = torch.randn(1, 3, height, width)
    shape = f"1x3x{height}x{width}"
    with torch.no_grad():
        ours = build_resnet_fpn_backbone(ResNetFPNConfig.base_rcnn_fpn()).eval()
        tv = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=0).eval()
        _randomize_frozen_bn(ours, 1)
        _randomize_frozen_bn(tv, 1)
        # sanity: same output shapes
        o, r = ours(x[..., :256, :256]), tv(x[..., :256, :256])
        assert [tuple(v.shape) for v in o.values()] == [tuple(v.shape) for v in r.values()]

        t_ours, t_tv = interleaved_medians(lambda: ours(x), lambda: tv(x), repeats)
        report(f"R-50-FPN forward eval {shape}", t_ours, t_tv, "torchvision resnet_fpn_backbone")

        ours.fuse_for_inference(channels_last=True)
        t_fused, t_tv = interleaved_medians(lambda: ours(x), lambda: tv(x), repeats)
        report(
            f"R-50-FPN forward eval {shape}, fused FrozenBN + channels_last",
            t_fused,
            t_tv,
            "torchvision resnet_fpn_backbone",
            note="detcore fuse_for_inference(channels_last=True); torchvision unchanged (NCHW, FrozenBN)",
        )


if __name__ == "__main__":

    def _print(name, ours, ref, ref_name, note=""):
        print(f"{name}: detcore {ours * 1e3:.1f} ms, {ref_name} {ref * 1e3:.1f} ms, x{ref / ours:.2f} {note}")

    run(_print)
