"""The "cuda" kernel provider: a :class:`~detcore.ops._dispatch.KernelTable` of CUDA implementations.

Each function takes exactly the arguments of its ``detcore::*`` custom op (already validated by
``detcore.ops``; tensors on one CUDA device) and returns tensors on that device. Inputs are made
contiguous float32/float64 (float16 and bfloat16 compute in float32 and are cast back), outputs are
allocated here with torch, and the compiled kernels (``detcore.ops_cuda._C``) are launched on the
current CUDA stream of the input's device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detcore.ops._dispatch import KernelTable
from detcore.ops_cuda._native import compute_dtype, dtype_code, native, stream_of

__all__ = ["CUDA_KERNELS", "cuda_kernels"]

CUDA_KERNELS = KernelTable("cuda")

_NMS_BLOCK = 64
# Elements of the deformable-convolution column buffer per chunk of images (256 MiB in float32).
_DEFORM_COLUMNS_BUDGET = 1 << 26


def cuda_kernels() -> KernelTable:
    """Factory registered as component ("kernels", "cuda")."""
    return CUDA_KERNELS


def _as(t: Tensor, dtype: torch.dtype) -> Tensor:
    return t.to(dtype).contiguous()


# ---------------------------------------------------------------------------------------------- NMS


def _nms(boxes: Tensor, scores: Tensor, idxs: Tensor | None, iou_threshold: float, rotated: bool) -> Tensor:
    device = boxes.device
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    dtype = compute_dtype(boxes.dtype)
    with torch.cuda.device(device):
        # Decreasing score, ties by index (stable); NaN scores first. Scores are ordered in the precision the
        # CPU kernels use: the box dtype for nms, float64 for nms_rotated.
        order = torch.sort(
            scores.to(torch.float64 if rotated else dtype), descending=True, stable=True
        ).indices
        sorted_boxes = _as(boxes[order], dtype)
        sorted_idxs = None if idxs is None else _as(idxs[order], torch.int64)
        col_blocks = (n + _NMS_BLOCK - 1) // _NMS_BLOCK
        mask = torch.empty((n, col_blocks), dtype=torch.int64, device=device)
        keep = torch.zeros(n, dtype=torch.uint8, device=device)
        scratch = torch.zeros(col_blocks, dtype=torch.int64, device=device)
        stream = stream_of(device)
        mask_fn = native().nms_rotated_mask if rotated else native().nms_mask
        mask_fn(
            sorted_boxes.data_ptr(),
            0 if sorted_idxs is None else sorted_idxs.data_ptr(),
            n,
            float(iou_threshold),
            dtype_code(sorted_boxes),
            mask.data_ptr(),
            stream,
        )
        native().nms_reduce(mask.data_ptr(), n, keep.data_ptr(), scratch.data_ptr(), stream)
        return order[keep.bool()]


@CUDA_KERNELS.register("nms")
def _nms_cuda(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    return _nms(boxes, scores, None, iou_threshold, rotated=False)


@CUDA_KERNELS.register("batched_nms")
def _batched_nms_cuda(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    return _nms(boxes, scores, idxs, iou_threshold, rotated=False)


@CUDA_KERNELS.register("nms_rotated")
def _nms_rotated_cuda(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    return _nms(boxes, scores, None, iou_threshold, rotated=True)


@CUDA_KERNELS.register("batched_nms_rotated")
def _batched_nms_rotated_cuda(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    return _nms(boxes, scores, idxs, iou_threshold, rotated=True)


# ---------------------------------------------------------------------------------------------- IoU


def _pairwise(boxes1: Tensor, boxes2: Tensor, rotated: bool) -> Tensor:
    device = boxes1.device
    out_dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    dtype = compute_dtype(out_dtype)
    n, m = boxes1.shape[0], boxes2.shape[0]
    with torch.cuda.device(device):
        a, b = _as(boxes1, dtype), _as(boxes2, dtype)
        out = torch.empty((n, m), dtype=dtype, device=device)
        if n > 0 and m > 0:
            fn = native().box_iou_rotated if rotated else native().box_iou
            fn(a.data_ptr(), b.data_ptr(), n, m, dtype_code(a), out.data_ptr(), stream_of(device))
        return out.to(out_dtype)


@CUDA_KERNELS.register("box_iou")
def _box_iou_cuda(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return _pairwise(boxes1, boxes2, rotated=False)


@CUDA_KERNELS.register("box_iou_rotated")
def _box_iou_rotated_cuda(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return _pairwise(boxes1, boxes2, rotated=True)


# ---------------------------------------------------------------------------------------------- RoI ops


@CUDA_KERNELS.register("roi_align")
def _roi_align_cuda(
    input: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    device = input.device
    dtype = compute_dtype(input.dtype)
    b, c, h, w = input.shape
    k = rois.shape[0]
    with torch.cuda.device(device):
        x, r = _as(input, dtype), _as(rois, dtype)
        out = torch.empty((k, c, pooled_height, pooled_width), dtype=dtype, device=device)
        native().roi_align_forward(
            x.data_ptr(), r.data_ptr(), k, b, c, h, w, float(spatial_scale), pooled_height, pooled_width,
            sampling_ratio, bool(aligned), dtype_code(x), out.data_ptr(), stream_of(device),
        )  # fmt: skip
        return out.to(input.dtype)


@CUDA_KERNELS.register("_roi_align_backward")
def _roi_align_backward_cuda(
    grad: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    device = grad.device
    dtype = compute_dtype(grad.dtype)
    with torch.cuda.device(device):
        g, r = _as(grad, dtype), _as(rois, dtype)
        grad_input = torch.zeros((batch_size, channels, height, width), dtype=dtype, device=device)
        native().roi_align_backward(
            g.data_ptr(), r.data_ptr(), r.shape[0], batch_size, channels, height, width, float(spatial_scale),
            pooled_height, pooled_width, sampling_ratio, bool(aligned), dtype_code(g), grad_input.data_ptr(),
            stream_of(device),
        )  # fmt: skip
        return grad_input.to(grad.dtype)


@CUDA_KERNELS.register("roi_pool")
def _roi_pool_cuda(
    input: Tensor, rois: Tensor, spatial_scale: float, pooled_height: int, pooled_width: int
) -> tuple[Tensor, Tensor]:
    device = input.device
    dtype = compute_dtype(input.dtype)
    b, c, h, w = input.shape
    k = rois.shape[0]
    with torch.cuda.device(device):
        x, r = _as(input, dtype), _as(rois, dtype)
        out = torch.empty((k, c, pooled_height, pooled_width), dtype=dtype, device=device)
        argmax = torch.empty((k, c, pooled_height, pooled_width), dtype=torch.int64, device=device)
        native().roi_pool_forward(
            x.data_ptr(), r.data_ptr(), k, b, c, h, w, float(spatial_scale), pooled_height, pooled_width,
            dtype_code(x), out.data_ptr(), argmax.data_ptr(), stream_of(device),
        )  # fmt: skip
        return out.to(input.dtype), argmax


@CUDA_KERNELS.register("_roi_pool_backward")
def _roi_pool_backward_cuda(
    grad: Tensor,
    rois: Tensor,
    argmax: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
) -> Tensor:
    device = grad.device
    dtype = compute_dtype(grad.dtype)
    with torch.cuda.device(device):
        g, r, a = _as(grad, dtype), _as(rois, dtype), _as(argmax, torch.int64)
        grad_input = torch.zeros((batch_size, channels, height, width), dtype=dtype, device=device)
        native().roi_pool_backward(
            g.data_ptr(), r.data_ptr(), a.data_ptr(), r.shape[0], batch_size, channels, height, width,
            pooled_height, pooled_width, dtype_code(g), grad_input.data_ptr(), stream_of(device),
        )  # fmt: skip
        return grad_input.to(grad.dtype)


@CUDA_KERNELS.register("roi_align_rotated")
def _roi_align_rotated_cuda(
    input: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
) -> Tensor:
    device = input.device
    dtype = compute_dtype(input.dtype)
    b, c, h, w = input.shape
    k = rois.shape[0]
    with torch.cuda.device(device):
        x, r = _as(input, dtype), _as(rois, dtype)
        out = torch.empty((k, c, pooled_height, pooled_width), dtype=dtype, device=device)
        native().roi_align_rotated_forward(
            x.data_ptr(), r.data_ptr(), k, b, c, h, w, float(spatial_scale), pooled_height, pooled_width,
            sampling_ratio, dtype_code(x), out.data_ptr(), stream_of(device),
        )  # fmt: skip
        return out.to(input.dtype)


@CUDA_KERNELS.register("_roi_align_rotated_backward")
def _roi_align_rotated_backward_cuda(
    grad: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
    sampling_ratio: int,
) -> Tensor:
    device = grad.device
    dtype = compute_dtype(grad.dtype)
    with torch.cuda.device(device):
        g, r = _as(grad, dtype), _as(rois, dtype)
        grad_input = torch.zeros((batch_size, channels, height, width), dtype=dtype, device=device)
        native().roi_align_rotated_backward(
            g.data_ptr(), r.data_ptr(), r.shape[0], batch_size, channels, height, width, float(spatial_scale),
            pooled_height, pooled_width, sampling_ratio, dtype_code(g), grad_input.data_ptr(),
            stream_of(device),
        )  # fmt: skip
        return grad_input.to(grad.dtype)


# ---------------------------------------------------------------------------------------------- deform_conv2d


def _deform_geometry(
    input: Tensor,
    weight: Tensor,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dil_h: int,
    dil_w: int,
) -> tuple[int, int, int, int, int, int, int, int]:
    b, c, h, w = input.shape
    kh, kw = weight.shape[2], weight.shape[3]
    out_h = (h + 2 * pad_h - (dil_h * (kh - 1) + 1)) // stride_h + 1
    out_w = (w + 2 * pad_w - (dil_w * (kw - 1) + 1)) // stride_w + 1
    return b, c, h, w, kh, kw, out_h, out_w


def _deform_chunk(batch: int, per_image: int) -> int:
    return max(1, min(batch, _DEFORM_COLUMNS_BUDGET // max(per_image, 1)))


@CUDA_KERNELS.register("deform_conv2d")
def _deform_conv2d_cuda(
    input: Tensor,
    weight: Tensor,
    offset: Tensor,
    mask: Tensor,
    bias: Tensor,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dilation_h: int,
    dilation_w: int,
    groups: int,
    offset_groups: int,
    use_mask: bool,
) -> Tensor:
    device = input.device
    dtype = compute_dtype(input.dtype)
    b, c, h, w, kh, kw, out_h, out_w = _deform_geometry(
        input, weight, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w
    )
    out_c = weight.shape[0]
    with torch.cuda.device(device):
        out = torch.zeros((b, out_c, out_h, out_w), dtype=dtype, device=device)
        if out.numel() == 0 or c == 0:
            return _add_bias(out, bias).to(input.dtype)
        x, wt, off = _as(input, dtype), _as(weight, dtype), _as(offset, dtype)
        m = _as(mask, dtype) if use_mask else None
        wg = wt.view(groups, out_c // groups, (c // groups) * kh * kw)
        stream = stream_of(device)
        chunk = _deform_chunk(b, c * kh * kw * out_h * out_w)
        for b0 in range(0, b, chunk):
            nb = min(chunk, b - b0)
            columns = torch.empty((c * kh * kw, nb * out_h * out_w), dtype=dtype, device=device)
            native().deform_im2col(
                x[b0].data_ptr(), off[b0].data_ptr(), 0 if m is None else m[b0].data_ptr(), nb, c, h, w,
                kh, kw, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w, out_h, out_w, offset_groups,
                bool(use_mask), dtype_code(x), columns.data_ptr(), stream,
            )  # fmt: skip
            res = torch.bmm(wg, columns.view(groups, (c // groups) * kh * kw, nb * out_h * out_w))
            out[b0 : b0 + nb] = res.view(out_c, nb, out_h, out_w).transpose(0, 1)
        return _add_bias(out, bias).to(input.dtype)


def _add_bias(out: Tensor, bias: Tensor) -> Tensor:
    if bias.numel() == out.shape[1] and bias.numel() > 0:
        out = out + bias.to(out.dtype).view(1, -1, 1, 1)
    return out


@CUDA_KERNELS.register("_deform_conv2d_backward")
def _deform_conv2d_backward_cuda(
    grad: Tensor,
    input: Tensor,
    weight: Tensor,
    offset: Tensor,
    mask: Tensor,
    bias: Tensor,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dilation_h: int,
    dilation_w: int,
    groups: int,
    offset_groups: int,
    use_mask: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    device = input.device
    dtype = compute_dtype(input.dtype)
    b, c, h, w, kh, kw, out_h, out_w = _deform_geometry(
        input, weight, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w
    )
    out_c = weight.shape[0]
    cg = (c // groups) * kh * kw
    with torch.cuda.device(device):
        x, wt, off, go = _as(input, dtype), _as(weight, dtype), _as(offset, dtype), _as(grad, dtype)
        m = _as(mask, dtype) if use_mask else None
        grad_input = torch.zeros((b, c, h, w), dtype=dtype, device=device)
        grad_weight = torch.zeros(wt.shape, dtype=dtype, device=device)
        grad_offset = torch.zeros(off.shape, dtype=dtype, device=device)
        grad_mask = torch.zeros(mask.shape, dtype=dtype, device=device)
        grad_bias = go.sum((0, 2, 3)) if go.numel() > 0 else torch.zeros(out_c, dtype=dtype, device=device)
        if go.numel() > 0 and c > 0:
            wg = wt.view(groups, out_c // groups, cg)
            gw = grad_weight.view(groups, out_c // groups, cg)
            stream = stream_of(device)
            chunk = _deform_chunk(b, c * kh * kw * out_h * out_w)
            for b0 in range(0, b, chunk):
                nb = min(chunk, b - b0)
                ncols = nb * out_h * out_w
                geometry = (nb, c, h, w, kh, kw, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w,
                            out_h, out_w, offset_groups, bool(use_mask))  # fmt: skip
                mask_ptr = 0 if m is None else m[b0].data_ptr()
                # [groups, out_c / groups, nb * out_h * out_w] in column order (b, y, x).
                go_g = go[b0 : b0 + nb].transpose(0, 1).reshape(groups, out_c // groups, ncols)
                col_grad = torch.bmm(wg.transpose(1, 2), go_g).contiguous()
                native().deform_col2im(
                    col_grad.data_ptr(), off[b0].data_ptr(), mask_ptr, *geometry, dtype_code(x),
                    grad_input[b0].data_ptr(), stream,
                )  # fmt: skip
                native().deform_col2im_coord(
                    col_grad.data_ptr(), x[b0].data_ptr(), off[b0].data_ptr(), mask_ptr, *geometry,
                    dtype_code(x), grad_offset[b0].data_ptr(), 0 if m is None else grad_mask[b0].data_ptr(),
                    stream,
                )  # fmt: skip
                columns = torch.empty((c * kh * kw, ncols), dtype=dtype, device=device)
                native().deform_im2col(
                    x[b0].data_ptr(), off[b0].data_ptr(), mask_ptr, *geometry, dtype_code(x),
                    columns.data_ptr(), stream,
                )  # fmt: skip
                gw += torch.bmm(go_g, columns.view(groups, cg, ncols).transpose(1, 2))
        return (
            grad_input.to(input.dtype),
            grad_weight.to(weight.dtype),
            grad_offset.to(offset.dtype),
            grad_mask.to(mask.dtype),
            grad_bias.to(bias.dtype),
        )


# ---------------------------------------------------------------------------------------------- masks


@CUDA_KERNELS.register("paste_masks_in_image")
def _paste_masks_in_image_cuda(
    masks: Tensor, boxes: Tensor, image_height: int, image_width: int, threshold: float
) -> Tensor:
    device = masks.device
    n, mh, mw = masks.shape
    with torch.cuda.device(device):
        # As the CPU kernel: masks sample in float32 unless float64 (bool/uint8/half too); boxes likewise.
        mk, bx = _as(masks, compute_dtype(masks.dtype)), _as(boxes, compute_dtype(boxes.dtype))
        out = torch.empty((n, image_height, image_width), dtype=torch.uint8, device=device)
        if out.numel() > 0:
            native().paste_masks(
                mk.data_ptr(), dtype_code(mk), bx.data_ptr(), dtype_code(bx), n, mh, mw, image_height,
                image_width, float(threshold), out.data_ptr(), stream_of(device),
            )  # fmt: skip
        return out.view(torch.bool) if threshold >= 0 else out
