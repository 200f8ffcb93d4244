"""Checks detcore-ops-cuda's kernel math and Python glue without a GPU (a development aid, not a test).

Compiles host_kernels.cpp (the CUDA element functions as host C++) with g++, substitutes it for
``detcore.ops_cuda._C``, runs ``detcore.ops_cuda.kernels`` on CPU tensors and compares with torchvision's CPU
ops, detectron2's golden data and detcore's CPU kernels. What it cannot check: launch configurations, the
shared-memory NMS reduction, atomics, streams and devices.

    PYTHONPATH=<site with detcore-ops and detcore-ops-cuda installed> python check.py
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
import pybind11
import torch
import torchvision

import detcore.ops  # noqa: F401
from detcore.ops_cuda import kernels as K

HERE = Path(__file__).resolve().parent
BUILD = Path(tempfile.mkdtemp(prefix="detcore-host-kernels-"))
subprocess.run(
    ["g++", "-O1", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", f"-I{HERE.parents[1] / 'csrc'}",
     f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}", str(HERE / "host_kernels.cpp"),
     "-o", str(BUILD / ("host_kernels" + sysconfig.get_config_var("EXT_SUFFIX")))],
    check=True,
)  # fmt: skip
sys.path.insert(0, str(BUILD))
import host_kernels  # noqa: E402

K.native = lambda: host_kernels
K.stream_of = lambda d: 0
torch.cuda.device = lambda d: contextlib.nullcontext()
G = next(
    p / "shared/reference/golden/ops" for p in HERE.parents if (p / "shared/reference/golden/ops").is_dir()
)
G = str(G) + "/"
g = torch.Generator().manual_seed(0)
fails = []


def check(name, ok, info=""):
    print(("ok  " if ok else "FAIL"), name, info)
    if not ok:
        fails.append(name)


def boxes(n, scale=100.0, dtype=torch.float32):
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale / 3
    return torch.cat([xy, xy + wh], 1).to(dtype)


# NMS vs torchvision and detcore CPU
for dt in (torch.float32, torch.float64):
    for n in (0, 1, 70, 300):
        b = boxes(n, dtype=dt)
        s = torch.rand(n, generator=g, dtype=dt)
        idx = torch.randint(0, 4, (n,), generator=g)
        for t in (0.0, 0.3, 0.5, 0.9, -0.1):
            r = K._nms_cuda(b, s, t)
            check(
                f"nms {dt} n={n} t={t}",
                torch.equal(r, torchvision.ops.nms(b, s, t))
                and torch.equal(r, torch.ops.detcore.nms(b, s, t)),
            )
            r = K._batched_nms_cuda(b, s, idx, t)
            check(
                f"batched_nms {dt} n={n} t={t}",
                (t < 0 or torch.equal(r, torchvision.ops.batched_nms(b, s, idx, t)))
                and torch.equal(r, torch.ops.detcore.batched_nms(b, s, idx, t)),
            )
b = boxes(100)
s = torch.full((100,), 0.5)
b[50:] = b[:50]
check("nms ties", torch.equal(K._nms_cuda(b, s, 0.5), torch.ops.detcore.nms(b, s, 0.5)))
bh = boxes(200).half()
sh = torch.rand(200, generator=g).half()
check("nms half", torch.equal(K._nms_cuda(bh, sh, 0.5), torch.ops.detcore.nms(bh, sh, 0.5)))

# box_iou
for dt in (torch.float32, torch.float64):
    a, b = boxes(40, dtype=dt), boxes(33, dtype=dt)
    a[0, 2] = a[0, 0]  # zero width
    r = K._box_iou_cuda(a, b)
    check(
        f"box_iou {dt}",
        torch.allclose(r, torchvision.ops.box_iou(a, b), atol=1e-6),
        (r - torchvision.ops.box_iou(a, b)).abs().max().item(),
    )

# rotated golden
z = np.load(G + "box_iou_rotated.npz")
r = K._box_iou_rotated_cuda(torch.from_numpy(z["boxes1"]), torch.from_numpy(z["boxes2"]))
check(
    "box_iou_rotated golden", np.allclose(r.numpy(), z["iou"], atol=1e-5), np.abs(r.numpy() - z["iou"]).max()
)
z = np.load(G + "box_iou_rotated_edge.npz")
r = K._box_iou_rotated_cuda(torch.from_numpy(z["pairs_a"]), torch.from_numpy(z["pairs_b"]))
check(
    "box_iou_rotated edge pairs",
    np.allclose(r.numpy(), z["pairs_iou_matrix"], atol=1e-5),
    np.abs(r.numpy() - z["pairs_iou_matrix"]).max(),
)
r = K._box_iou_rotated_cuda(torch.from_numpy(z["random_a"]), torch.from_numpy(z["random_b"]))
check("box_iou_rotated edge random", np.allclose(r.numpy(), z["random_iou"], atol=1e-5))
r = K._box_iou_rotated_cuda(
    torch.from_numpy(z["random_a"]).double(), torch.from_numpy(z["random_b"]).double()
)
check("box_iou_rotated f64", np.allclose(r.numpy(), z["random_iou"], atol=1e-5))
for f in ("nms_rotated.npz", "nms_rotated_clusters.npz"):
    z = np.load(G + f)
    bx, sc, ix = (torch.from_numpy(z[k]) for k in ("boxes", "scores", "idxs"))
    for key in z.files:
        if key.startswith("keep_") and "f64" not in key:
            t = float(key[5:])
            check(f"{f} {key}", np.array_equal(K._nms_rotated_cuda(bx, sc, t).numpy(), z[key]))
            check(
                f"{f} batched_{key}",
                np.array_equal(K._batched_nms_rotated_cuda(bx, sc, ix, t).numpy(), z["batched_" + key]),
            )
    if "boxes_f64" in z.files:
        check(
            "nms_rotated f64",
            np.array_equal(
                K._nms_rotated_cuda(torch.from_numpy(z["boxes_f64"]), sc.double(), 0.5).numpy(),
                z["keep_f64_0.5"],
            ),
        )

# roi_align vs torchvision (forward + backward)
for dt in (torch.float32, torch.float64):
    x = torch.rand(2, 3, 13, 17, generator=g, dtype=dt)
    rb = boxes(9, scale=60.0, dtype=dt)
    rb[0] = torch.tensor([-10, -5, 3, 2], dtype=dt)
    rb[1] = torch.tensor([50, 40, 45, 30], dtype=dt)
    rois = torch.cat([torch.randint(0, 2, (9, 1), generator=g).to(dt), rb], 1)
    for sr in (-1, 0, 2):
        for al in (False, True):
            for scale in (0.25, 0.5):
                ref = torchvision.ops.roi_align(x, rois, (5, 4), scale, sr, al)
                out = K._roi_align_cuda(x, rois, scale, 5, 4, sr, al)
                gr = torch.rand(out.shape, generator=g, dtype=dt)
                xx = x.clone().requires_grad_()
                torchvision.ops.roi_align(xx, rois, (5, 4), scale, sr, al).backward(gr)
                gi = K._roi_align_backward_cuda(gr, rois, scale, 5, 4, 2, 3, 13, 17, sr, al)
                check(
                    f"roi_align {dt} sr={sr} al={al} sc={scale}",
                    torch.allclose(out, ref, atol=1e-5) and torch.allclose(gi, xx.grad, atol=1e-5),
                    ((out - ref).abs().max().item(), (gi - xx.grad).abs().max().item()),
                )
    ref, am_ = None, None
    out, am = K._roi_pool_cuda(x, rois, 0.5, 4, 3)
    ref = torchvision.ops.roi_pool(x, rois, (4, 3), 0.5)
    gr = torch.rand(out.shape, generator=g, dtype=dt)
    xx = x.clone().requires_grad_()
    torchvision.ops.roi_pool(xx, rois, (4, 3), 0.5).backward(gr)
    gi = K._roi_pool_backward_cuda(gr, rois, am, 0.5, 4, 3, 2, 3, 13, 17)
    check(
        f"roi_pool {dt}",
        torch.allclose(out, ref) and torch.allclose(gi, xx.grad),
        ((out - ref).abs().max().item(), (gi - xx.grad).abs().max().item()),
    )

# roi_align_rotated golden
for f in (
    "roi_align_rotated_f32.npz",
    "roi_align_rotated_f64.npz",
    "roi_align_rotated_edge_f32.npz",
    "roi_align_rotated_edge_f64.npz",
):
    z = np.load(G + f)
    x = torch.from_numpy(z["input"])
    tol = 1e-5 if "f32" in f else 1e-10
    for key in z.files:
        if key.startswith("out") and key.count("_") == 2:
            parts = key.split("_")
            ph, pw = map(int, parts[0][3:].split("x"))
            sc = float(parts[1][5:])
            sr = int(parts[2][2:])
            rois = torch.from_numpy(z[key + "_rois"] if key + "_rois" in z.files else z["rois"])
            out = K._roi_align_rotated_cuda(x, rois, sc, ph, pw, sr)
            gi = K._roi_align_rotated_backward_cuda(
                torch.from_numpy(z[key + "_grad_output"]), rois, sc, ph, pw, *x.shape, sr
            )
            e1 = np.abs(out.numpy() - z[key]).max()
            e2 = np.abs(gi.numpy() - z[key + "_grad_input"]).max()
            check(f"{f} {key}", e1 <= tol and e2 <= tol * 10, (e1, e2))

# deform_conv2d vs torchvision
for dt in (torch.float64, torch.float32):
    for B, C, H, W, oc, kh, kw, st, pd, dl, grp, og, um in [
        (2, 4, 7, 9, 6, 3, 3, 1, 1, 1, 2, 2, True),
        (3, 2, 6, 5, 4, 2, 3, 2, 0, 2, 1, 1, False),
        (1, 6, 8, 8, 3, 3, 3, 1, 2, 1, 1, 3, True),
    ]:
        x = torch.rand(B, C, H, W, generator=g, dtype=dt)
        w = torch.rand(oc, C // grp, kh, kw, generator=g, dtype=dt) - 0.5
        oh = (H + 2 * pd - (dl * (kh - 1) + 1)) // st + 1
        ow = (W + 2 * pd - (dl * (kw - 1) + 1)) // st + 1
        off = (torch.rand(B, 2 * og * kh * kw, oh, ow, generator=g, dtype=dt) - 0.5) * 4
        msk = torch.rand(B, og * kh * kw, oh, ow, generator=g, dtype=dt)
        bias = torch.rand(oc, generator=g, dtype=dt)
        args = (st, st, pd, pd, dl, dl, grp, og, um)
        out = K._deform_conv2d_cuda(x, w, off, msk, bias, *args)
        ts = [t.clone().requires_grad_() for t in (x, w, off, msk, bias)]
        ref = torchvision.ops.deform_conv2d(
            ts[0], ts[2], ts[1], ts[4], (st, st), (pd, pd), (dl, dl), ts[3] if um else None
        )
        gr = torch.rand(ref.shape, generator=g, dtype=dt)
        ref.backward(gr)
        grads = K._deform_conv2d_backward_cuda(gr, x, w, off, msk, bias, *args)
        tol = 1e-9 if dt == torch.float64 else 1e-4
        errs = [(out - ref).abs().max().item()] + [
            (a - (t.grad if t.grad is not None else torch.zeros_like(t))).abs().max().item()
            for a, t in zip(grads, ts)
        ]
        check(f"deform_conv2d {dt} B={B} um={um}", max(errs) <= tol, errs)
    # chunking path
    old = K._DEFORM_COLUMNS_BUDGET
    K._DEFORM_COLUMNS_BUDGET = 1
    out2 = K._deform_conv2d_cuda(x, w, off, msk, bias, *args)
    g2 = K._deform_conv2d_backward_cuda(gr, x, w, off, msk, bias, *args)
    K._DEFORM_COLUMNS_BUDGET = old
    check(
        "deform chunked", torch.allclose(out2, out) and all(torch.allclose(a, b) for a, b in zip(g2, grads))
    )

# paste masks golden
z = np.load(G + "paste_masks_in_image.npz")
ih, iw = map(int, z["image_shape"])
mk, bx = torch.from_numpy(z["masks"]), torch.from_numpy(z["boxes"])
for thr, key in ((0.5, "pasted_threshold_0.5"), (0.3, "pasted_threshold_0.3"), (-1.0, "pasted_soft")):
    r = K._paste_masks_in_image_cuda(mk, bx, ih, iw, thr).to(torch.uint8).numpy()
    d = np.abs(r.astype(int) - z[key].astype(int))
    check(f"paste {key}", d.max() <= (1 if thr < 0 else 0), (d.max(), (d > 0).sum()))
z = np.load(G + "paste_masks_in_image_edge.npz")
ih, iw = map(int, z["image_shape"])
bx = torch.from_numpy(z["boxes"])
for mkey in ("masks28", "masks14", "disc28"):
    for suffix, thr in (("_pasted_threshold_0.5", 0.5), ("_pasted_soft", -1.0)):
        if mkey + suffix not in z.files:
            continue
        r = K._paste_masks_in_image_cuda(torch.from_numpy(z[mkey]), bx, ih, iw, thr).to(torch.uint8).numpy()
        d = np.abs(r.astype(int) - z[mkey + suffix].astype(int))
        check(f"paste edge {mkey}{suffix}", d.max() <= (1 if thr < 0 else 0), (d.max(), (d > 0).sum()))
print("FAILS:", fails)
