"""detcore.engine.data: training data loader throughput on the synthetic shapes dataset.

Row: seconds per image of ``build_detection_train_loader`` with ``DatasetMapper`` (PNG decode, BGR,
ResizeShortestEdge(640..800, max 1333, choice) + RandomFlip, annotations -> Instances with polygon masks),
batch 4, 2 workers, vs the same loader whose "mapper" only reads the PNG into a CHW uint8 tensor. The
ratio (reference / detcore, < 1) is the cost of augmentation and annotation handling on top of decoding.

Run through ``benchmarks/run.py`` (``run(report)``) or directly: ``python benchmarks/bench_data.py``.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time

import numpy as np
import torch

from detcore.engine.data import (
    DatasetMapper,
    build_detection_train_loader,
    load_coco_json,
    make_shapes_dataset,
)
from detcore.engine.data import transforms as T
from detcore.engine.data.detection_utils import read_image

NUM_IMAGES = 64
BATCHES = 24  # 96 images per measurement
REPEATS = 3


def _read_only(d: dict) -> dict:
    image = read_image(d["file_name"], "BGR")
    return {**d, "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))}


def _seconds_per_image(dicts: list[dict], mapper) -> float:
    loader = build_detection_train_loader(
        dicts, mapper=mapper, total_batch_size=4, num_workers=2, aspect_ratio_grouping=True, seed=0
    )
    it = iter(loader)
    next(it)  # worker start-up and warm-up
    next(it)
    t0 = time.perf_counter()
    for batch in itertools.islice(it, BATCHES):
        assert len(batch) == 4
    seconds = (time.perf_counter() - t0) / (BATCHES * 4)
    del it
    return seconds


def run(report) -> None:
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="detcore-bench-data-") as root:
        paths = make_shapes_dataset(root, num_train=NUM_IMAGES, num_val=0, seed=0)
        dicts = load_coco_json(*paths["train"])
        mapper = DatasetMapper(
            True,
            augmentations=[
                T.ResizeShortestEdge((640, 672, 704, 736, 768, 800), 1333, sample_style="choice"),
                T.RandomFlip(),
            ],
            use_instance_mask=True,
        )
        t_d, t_r = [], []
        for _ in range(REPEATS):  # interleaved: load on the shared machine hits both alike
            t_d.append(_seconds_per_image(dicts, mapper))
            t_r.append(_seconds_per_image(dicts, _read_only))
        d, r = statistics.median(t_d), statistics.median(t_r)
        report(
            "train loader: DatasetMapper (ResizeShortestEdge 640-800 + flip, masks) 320x256 shapes PNGs, batch 4, 2 workers",
            d,
            r,
            "same loader, read PNG only",
            note=f"per image: {1 / d:.0f} images/s with the mapper vs {1 / r:.0f} images/s decode-only",
        )


if __name__ == "__main__":

    def _print(name, d, r, ref, note=""):
        print(f"{name}: detcore {d * 1e3:.2f} ms, {ref} {r * 1e3:.2f} ms, ratio x{r / d:.2f} {note}")

    run(_print)
