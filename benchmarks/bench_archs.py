"""Whole-model inference (eval, CPU, 2 threads, one 800x1333 image): detcore vs torchvision, same weights.

Pairs (detcore config via ``detcore.archs.build_model(get_config(...))`` / torchvision builder):

- ``mask_rcnn_R_50_FPN`` / ``maskrcnn_resnet50_fpn``
- ``faster_rcnn_R_50_FPN`` / ``fasterrcnn_resnet50_fpn``
- ``retinanet_R_50_FPN`` / ``retinanet_resnet50_fpn``

Both models of a pair compute the same thing with the same weights: the torchvision model is built with
random weights (seed 0, ``weights=None, weights_backbone=None``) and 80 object classes (``num_classes=81``
with background for the R-CNNs, 80 for RetinaNet), and :func:`convert_torchvision_detection` renames its
state dict to detcore's names (torchvision's background class 0 moves to detectron2's last column of
``cls_score``; its rows of ``bbox_pred`` and the mask logits are dropped). detcore is built with
``stride_in_1x1=False`` (torchvision's ResNet puts the stride in the 3x3 conv). torchvision's
weights take RGB input, so detcore is given ``input_format=RGB`` with detectron2's pixel means in RGB
order, and torchvision's normalisation is set to the same means on the 0..255 scale with std 1: both see
the same normalised image (checked: identical FPN features). Random weights need two adjustments to give
realistic work after the backbone (made once, to the shared weights): the BatchNorm running statistics are
set to those of the benchmark image (else activations blow up, every score saturates and every box
degenerates), and the classifier biases of five classes are raised (else no score passes 0.05); each model
then keeps its full 100 detections, and Mask R-CNN runs its mask head on 100 boxes.

Sizes: RPN pre/post-NMS top-n 1000/1000 (test), 100 detections per image, score threshold 0.05, NMS 0.5,
min/max size 800/1333 (an 800x1333 input is not resized by either; torchvision still calls its resize,
a 1.0-scale interpolation), RetinaNet 1000 candidates per level. Differences that remain: detectron2's
RetinaNet P6 is a 3x3 conv on res5 (2048 channels), torchvision's on P5 (256 channels), so those
convolutions cannot share weights (both keep their own random init; detcore's does ~8x more work there);
torchvision receives a float image already divided by 255 (its API), detcore the uint8 image.

Each pair gives two rows: the plain detcore model, and the same model (same weights) after
:func:`detcore.archs.optimize_for_inference` (norms folded into convolutions, channels-last weights, fused
oneDNN conv + ReLU / conv + add + ReLU on CPU); the torchvision time is shared by both rows.

Timings alternate between the three models (warm-up once, median of 3). Peak memory: each model runs one
inference in a fresh subprocess (``python bench_archs.py --memory ...``) that reports its resident set size
after building the model and its high-water mark during the inference (``/proc/self/status`` VmRSS and
VmHWM, the mark reset after building); the row note gives the peak and its increase over the built model.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

__all__ = ["convert_torchvision_detection", "run"]

PAIRS = [
    ("mask_rcnn_R_50_FPN", "maskrcnn_resnet50_fpn"),
    ("faster_rcnn_R_50_FPN", "fasterrcnn_resnet50_fpn"),
    ("retinanet_R_50_FPN", "retinanet_resnet50_fpn"),
]
HEIGHT, WIDTH = 800, 1333
PIXEL_MEAN_RGB = (123.675, 116.28, 103.53)  # detectron2's means, in torchvision's RGB order
BOOSTED_CLASSES = (1, 2, 3, 4, 5)  # torchvision class ids whose classifier bias is raised


def convert_torchvision_detection(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision Faster/Mask R-CNN or RetinaNet (ResNet-FPN) state dict to detcore's names.

    ``backbone.body.*`` -> ``backbone.bottom_up.*`` (:func:`detcore.backbones.convert_torchvision_resnet`);
    ``backbone.fpn.inner_blocks.i.0`` / ``layer_blocks.i.0`` -> ``backbone.fpn_lateral{L}`` /
    ``fpn_output{L}`` (L = first level + i: 2 for the R-CNNs, 3 for RetinaNet);
    ``backbone.fpn.extra_blocks.p7`` -> ``backbone.top_block.p7`` (``p6`` is dropped: torchvision's reads
    P5, detectron2's res5); ``rpn.head.conv.0.0``/``cls_logits``/``bbox_pred`` ->
    ``proposal_generator.rpn_head.conv``/``objectness_logits``/``anchor_deltas``; ``roi_heads.box_head.fc6``/
    ``fc7`` -> ``roi_heads.box_head.fc1``/``fc2``; ``box_predictor.cls_score`` rows ``[1..K, 0]`` (background
    last), ``bbox_pred`` rows of classes 1..K (4 each); ``mask_head.i.0`` -> ``mask_head.mask_fcn{i+1}``,
    ``mask_predictor.conv5_mask`` -> ``mask_head.deconv``, ``mask_fcn_logits`` rows 1..K ->
    ``mask_head.predictor``; RetinaNet ``head.classification_head.conv.i.0`` / ``regression_head.conv.i.0``
    -> ``head.cls_subnet.{2i}`` / ``head.bbox_subnet.{2i}``, ``cls_logits`` -> ``head.cls_score``,
    ``bbox_reg`` -> ``head.bbox_pred`` (same anchor-major, class-minor channel order).

    Args:
        state_dict: torchvision detection model's ``state_dict()``.

    Returns:
        dict[str, Tensor]: detcore names -> tensors.

    Raises:
        ValueError: a key the converter does not know.
    """
    from detcore.backbones import convert_torchvision_resnet

    body = {k[len("backbone.body.") :]: v for k, v in state_dict.items() if k.startswith("backbone.body.")}
    out = convert_torchvision_resnet(body, prefix="backbone.bottom_up.")
    is_retinanet = any(k.startswith("head.classification_head.") for k in state_dict)
    first_level = 3 if is_retinanet else 2
    simple = {
        "rpn.head.conv.0.0": "proposal_generator.rpn_head.conv",
        "rpn.head.cls_logits": "proposal_generator.rpn_head.objectness_logits",
        "rpn.head.bbox_pred": "proposal_generator.rpn_head.anchor_deltas",
        "roi_heads.box_head.fc6": "roi_heads.box_head.fc1",
        "roi_heads.box_head.fc7": "roi_heads.box_head.fc2",
        "roi_heads.mask_predictor.conv5_mask": "roi_heads.mask_head.deconv",
        "head.classification_head.cls_logits": "head.cls_score",
        "head.regression_head.bbox_reg": "head.bbox_pred",
        "backbone.fpn.extra_blocks.p7": "backbone.top_block.p7",
    }
    patterns: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
        (
            re.compile(r"backbone\.fpn\.inner_blocks\.(\d)\.0"),
            lambda m: f"backbone.fpn_lateral{first_level + int(m[1])}",
        ),
        (
            re.compile(r"backbone\.fpn\.layer_blocks\.(\d)\.0"),
            lambda m: f"backbone.fpn_output{first_level + int(m[1])}",
        ),
        (
            re.compile(r"roi_heads\.mask_head\.(\d)\.0"),
            lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}",
        ),
        (
            re.compile(r"head\.classification_head\.conv\.(\d)\.0"),
            lambda m: f"head.cls_subnet.{2 * int(m[1])}",
        ),
        (re.compile(r"head\.regression_head\.conv\.(\d)\.0"), lambda m: f"head.bbox_subnet.{2 * int(m[1])}"),
    ]
    for key, value in state_dict.items():
        if key.startswith("backbone.body.") or key.startswith("backbone.fpn.extra_blocks.p6."):
            continue
        module, _, field = key.rpartition(".")
        value = value.detach().clone()
        if module == "roi_heads.box_predictor.cls_score":
            out[f"{module}.{field}"] = torch.cat([value[1:], value[:1]])
            continue
        if module == "roi_heads.box_predictor.bbox_pred":
            out[f"{module}.{field}"] = value[4:]
            continue
        if module == "roi_heads.mask_predictor.mask_fcn_logits":
            out[f"roi_heads.mask_head.predictor.{field}"] = value[1:]
            continue
        new = simple.get(module)
        if new is None:
            for pattern, fn in patterns:
                m = pattern.fullmatch(module)
                if m is not None:
                    new = fn(m)
                    break
        if new is None:
            raise ValueError(f"state_dict key {key!r} has no detcore counterpart in this converter")
        out[f"{new}.{field}"] = value
    return out


def _torchvision_model(tv_name: str, calibrate: bool = True) -> torch.nn.Module:
    import torchvision

    builder = getattr(torchvision.models.detection, tv_name)
    common = {
        "weights": None,
        "weights_backbone": None,
        "min_size": HEIGHT,
        "max_size": WIDTH,
        "image_mean": [m / 255.0 for m in PIXEL_MEAN_RGB],
        "image_std": [1 / 255.0] * 3,
    }
    if tv_name.startswith("retinanet"):
        kwargs = {
            "num_classes": 80,
            "score_thresh": 0.05,
            "nms_thresh": 0.5,
            "detections_per_img": 100,
            "topk_candidates": 1000,
        }
    else:
        kwargs = {
            "num_classes": 81,
            "rpn_pre_nms_top_n_test": 1000,
            "rpn_post_nms_top_n_test": 1000,
            "rpn_nms_thresh": 0.7,
            "box_score_thresh": 0.05,
            "box_nms_thresh": 0.5,
            "box_detections_per_img": 100,
        }
    model = builder(**common, **kwargs).eval()
    if calibrate:
        _calibrate_batchnorm(model.backbone.body)
    with torch.no_grad():
        if tv_name.startswith("retinanet"):
            bias = model.head.classification_head.cls_logits.bias  # [A * K], anchor-major
            bias.view(-1, 80)[:, [c - 1 for c in BOOSTED_CLASSES]] = 0.0
        else:
            model.roi_heads.box_predictor.cls_score.bias[list(BOOSTED_CLASSES)] = 6.0
    return model


def _calibrate_batchnorm(body: torch.nn.Module) -> None:
    """Set every BatchNorm's running statistics to those of its input on the benchmark image.

    A randomly initialised ResNet without this blows activations up by orders of magnitude (torchvision's
    ``weights=None`` models have BatchNorm with mean 0 / var 1), which saturates every score and degenerates
    every box; with it, every normalised activation has about zero mean and unit variance, as in a trained
    network, so scores and boxes (and thus the work after the backbone) are realistic.
    """

    def hook(module, args):
        x = args[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)))

    handles = [
        m.register_forward_pre_hook(hook) for m in body.modules() if isinstance(m, torch.nn.BatchNorm2d)
    ]
    _, rgb = _image()
    mean = torch.tensor(PIXEL_MEAN_RGB).view(3, 1, 1)
    with torch.no_grad():
        body((rgb * 255.0 - mean)[None])
    for h in handles:
        h.remove()


def _detcore_model(name: str) -> torch.nn.Module:
    from detcore.archs import build_model, get_config

    cfg = get_config(
        name,
        [
            "model.backbone.resnet.stride_in_1x1=false",
            "model.input_format=RGB",
            f"model.pixel_mean={list(PIXEL_MEAN_RGB)}",
        ],
    )
    return build_model(cfg).eval()


def _build_pair(name: str, tv_name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    tv_model = _torchvision_model(tv_name)
    torch.manual_seed(0)
    dc_model = _detcore_model(name)
    converted = convert_torchvision_detection(tv_model.state_dict())
    missing, unexpected = dc_model.load_state_dict(converted, strict=False)
    allowed_missing = {"backbone.top_block.p6.weight", "backbone.top_block.p6.bias"}
    if unexpected or set(missing) - allowed_missing:
        raise RuntimeError(
            f"{name}: weight conversion incomplete: missing {missing}, unexpected {unexpected}"
        )
    return dc_model, tv_model


def _image() -> tuple[torch.Tensor, torch.Tensor]:
    """(detcore input Tensor[3, H, W] uint8 RGB, torchvision input Tensor[3, H, W] float RGB in [0, 1])."""
    g = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8, generator=g)
    return rgb, rgb.float().div(255.0)


def _runners(dc_model, tv_model) -> tuple[Callable[[], object], Callable[[], object]]:
    rgb_u8, rgb = _image()

    def run_detcore():
        with torch.no_grad():
            return dc_model([{"image": rgb_u8}])

    def run_torchvision():
        with torch.no_grad():
            return tv_model([rgb])

    return run_detcore, run_torchvision


def _num_detections(dc_out, tv_out) -> tuple[int, int]:
    return len(dc_out[0]["instances"]), int(tv_out[0]["boxes"].shape[0])


def _interleaved_medians(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    for fn in fns:  # warm-up
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _memory_child(name: str, tv_name: str, which: str, weights: str) -> None:
    """Build one model, run one inference, print {"built_mb", "peak_mb"} as JSON.

    ``built_mb`` is the resident set size (VmRSS) before the inference, ``peak_mb`` the high-water mark
    (VmHWM) of the inference: the mark is reset after building (``/proc/self/clear_refs``) where the kernel
    allows it. ``ru_maxrss`` is not used: Linux carries it over from the parent through fork and exec.
    """
    torch.set_num_threads(2)
    torch.manual_seed(0)
    if which.startswith("detcore"):
        model = _detcore_model(name)
    else:
        model = _torchvision_model(tv_name, calibrate=False)
    model.load_state_dict(torch.load(weights, weights_only=True), strict=which == "torchvision")
    if which == "detcore-optimized":
        from detcore.archs import optimize_for_inference

        model = optimize_for_inference(model)
    rgb_u8, rgb = _image()
    built = _proc_status_mb("VmRSS")
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    with torch.no_grad():
        model([{"image": rgb_u8}] if which.startswith("detcore") else [rgb])
    peak = _proc_status_mb("VmHWM")
    print(json.dumps({"built_mb": built, "peak_mb": peak}))


def _peak_memory(name: str, tv_name: str, which: str, state: dict[str, torch.Tensor]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "weights.pt")
        torch.save(state, path)
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--memory", name, tv_name, which, path],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mem_note(mem: dict[str, float]) -> str:
    return f"{mem['peak_mb']:.0f} MB (+{mem['peak_mb'] - mem['built_mb']:.0f} MB in inference)"


def run(report) -> None:
    from detcore.archs import optimize_for_inference

    torch.set_num_threads(2)
    for name, tv_name in PAIRS:
        dc_model, tv_model = _build_pair(name, tv_name)
        state = dc_model.state_dict()
        opt_model = _detcore_model(name)
        opt_model.load_state_dict(state, strict=False)  # same weights (P6 of RetinaNet included)
        opt_model = optimize_for_inference(opt_model)
        run_dc, run_tv = _runners(dc_model, tv_model)
        run_opt, _ = _runners(opt_model, tv_model)
        out_dc, out_opt, out_tv = run_dc(), run_opt(), run_tv()
        n_dc, n_tv = _num_detections(out_dc, out_tv)
        n_opt = len(out_opt[0]["instances"])
        t_dc, t_opt, t_tv = _interleaved_medians([run_dc, run_opt, run_tv], repeats=3)
        mem_dc = _peak_memory(name, tv_name, "detcore", state)
        mem_opt = _peak_memory(name, tv_name, "detcore-optimized", state)
        mem_tv = _peak_memory(name, tv_name, "torchvision", tv_model.state_dict())
        del dc_model, opt_model, tv_model
        extra = ""
        if name.startswith("retinanet"):
            extra = "; P6 conv differs (detcore on res5 2048ch, torchvision on P5 256ch), random in both"
        report(
            f"{name}_inference_800x1333",
            t_dc,
            t_tv,
            f"torchvision {tv_name}",
            f"plain model; same weights, 80 classes, {n_dc}/{n_tv} detections; peak RSS detcore "
            f"{_mem_note(mem_dc)}, torchvision {_mem_note(mem_tv)}{extra}",
        )
        report(
            f"{name}_inference_800x1333_optimized",
            t_opt,
            t_tv,
            f"torchvision {tv_name}",
            f"detcore.archs.optimize_for_inference (folded norms, channels-last, fused oneDNN conv+ReLU/add, Winograd F(4x4,3x3) for wide 3x3 convs); "
            f"{n_opt}/{n_tv} detections; peak RSS detcore {_mem_note(mem_opt)}, torchvision "
            f"{_mem_note(mem_tv)}{extra}",
        )


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--memory":  # which: detcore, detcore-optimized, torchvision
        _memory_child(*sys.argv[2:])
    else:

        def _print(name, detcore_seconds, reference_seconds, reference_name, note=""):
            ratio = reference_seconds / detcore_seconds
            print(
                f"{name}: detcore {detcore_seconds * 1e3:.0f} ms, {reference_name} "
                f"{reference_seconds * 1e3:.0f} ms, speed-up {ratio:.2f}x; {note}",
                flush=True,
            )

        run(_print)
