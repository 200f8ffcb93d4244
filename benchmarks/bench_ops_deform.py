"""Deformable convolution (DCNv2 and DCNv1) on CPU: detcore vs torchvision.ops.deform_conv2d."""

from __future__ import annotations

import torch
from _timing import interleaved_medians

__all__ = ["run"]


def _inputs(with_mask: bool, requires_grad: bool):
    g = torch.Generator().manual_seed(0)
    n, c, h, w, k = 2, 64, 100, 168, 3
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(64, c, k, k, generator=g) * 0.05
    bias = torch.randn(64, generator=g)
    offset = torch.randn(n, 2 * k * k, h, w, generator=g) * 1.5
    mask = torch.rand(n, k * k, h, w, generator=g) if with_mask else None
    tensors = [x, weight, bias, offset] + ([mask] if with_mask else [])
    for t in tensors:
        t.requires_grad_(requires_grad)
    return x, offset, weight, bias, mask, tensors


def run(report) -> None:
    import torchvision

    from detcore.ops import deform_conv2d

    torch.set_num_threads(2)
    shape = "2x64x100x168, 64->64 3x3 pad 1, offsets std 1.5 px"
    for with_mask in (True, False):
        kind = "DCNv2 (mask)" if with_mask else "DCNv1"
        x, offset, weight, bias, mask, _ = _inputs(with_mask, requires_grad=False)

        def ours(x=x, offset=offset, weight=weight, bias=bias, mask=mask):
            return deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)

        def ref(x=x, offset=offset, weight=weight, bias=bias, mask=mask):
            return torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)

        with torch.no_grad():
            report(
                f"deform_conv2d forward {kind}",
                *interleaved_medians(ours, ref),
                "torchvision.ops.deform_conv2d",
                shape,
            )

        x, offset, weight, bias, mask, tensors = _inputs(with_mask, requires_grad=True)
        grad = torch.randn(2, 64, 100, 168, generator=torch.Generator().manual_seed(1))

        def ours_fb(x=x, offset=offset, weight=weight, bias=bias, mask=mask, tensors=tensors, grad=grad):
            out = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
            return torch.autograd.grad(out, tensors, grad)

        def ref_fb(x=x, offset=offset, weight=weight, bias=bias, mask=mask, tensors=tensors, grad=grad):
            out = torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
            return torch.autograd.grad(out, tensors, grad)

        report(
            f"deform_conv2d forward+backward {kind}",
            *interleaved_medians(ours_fb, ref_fb, 3),
            "torchvision.ops.deform_conv2d",
            shape,
        )


if __name__ == "__main__":

    def _print(name, ours, ref, ref_name, note=""):
        print(
            f"{name:45s} detcore {ours * 1e3:8.1f} ms  {ref_name} {ref * 1e3:8.1f} ms  x{ref / ours:5.2f}  {note}"
        )

    run(_print)
