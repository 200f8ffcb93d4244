"""detcore.engine training throughput of the demo model (``nox -s demo``) on CPU, against its data loader.

Row: seconds per image of the demo's data loader alone (``build_detection_train_loader`` with the demo
config's ``DatasetMapper``, batch size and worker count, on shapes PNGs) vs seconds per image of one
training iteration of the demo Mask R-CNN (forward, backward, gradient clipping and the optimizer step as
``detcore train`` runs them, on batches taken from the same loader beforehand). The speed-up column is
loader images/s divided by training images/s: the loader is not the bottleneck when it is >= 3.

Run through ``benchmarks/run.py`` (``run(report)``) or directly: ``python benchmarks/bench_train.py``.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time

import torch

from detcore.archs import build_model, get_config
from detcore.engine.data import (
    DatasetMapper,
    build_detection_train_loader,
    load_coco_json,
    make_shapes_dataset,
)
from detcore.engine.demo import DEMO_CONFIG
from detcore.engine.train import build_optimizer_from_config

NUM_IMAGES = 64
LOADER_BATCHES = 30
TRAIN_STEPS = 6
REPEATS = 3


def _loader(cfg, dicts):
    return build_detection_train_loader(
        dicts,
        mapper=DatasetMapper(**DatasetMapper.from_config(cfg, is_train=True)),
        total_batch_size=cfg.solver.ims_per_batch,
        num_workers=cfg.dataloader.num_workers,
        aspect_ratio_grouping=cfg.dataloader.aspect_ratio_grouping,
        seed=0,
    )


def _loader_seconds_per_image(cfg, dicts) -> float:
    it = iter(_loader(cfg, dicts))
    next(it)  # worker start-up
    next(it)
    start = time.perf_counter()
    n = sum(len(batch) for batch in itertools.islice(it, LOADER_BATCHES))
    seconds = (time.perf_counter() - start) / n
    del it
    return seconds


def _train_seconds_per_image(model, optimizer, batches) -> float:
    model.train()
    start = time.perf_counter()
    n = 0
    for batch in batches:
        losses = sum(model(batch).values())
        optimizer.zero_grad(set_to_none=True)
        losses.backward()
        optimizer.step()
        n += len(batch)
    return (time.perf_counter() - start) / n


def run(report) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    cfg = get_config(DEMO_CONFIG)
    solver = cfg.solver
    model = build_model(cfg)
    if solver.channels_last:  # as detcore train does
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer_from_config(model, solver)
    with tempfile.TemporaryDirectory(prefix="detcore-bench-train-") as root:
        paths = make_shapes_dataset(root, num_train=NUM_IMAGES, num_val=0, seed=0)
        dicts = load_coco_json(*paths["train"])
        it = iter(_loader(cfg, dicts))
        batches = [next(it) for _ in range(TRAIN_STEPS + 1)]
        del it
        _train_seconds_per_image(model, optimizer, batches[:1])  # warm-up
        t_load, t_train = [], []
        for _ in range(REPEATS):
            t_load.append(_loader_seconds_per_image(cfg, dicts))
            t_train.append(_train_seconds_per_image(model, optimizer, batches[1:]))
    load, train = statistics.median(t_load), statistics.median(t_train)
    report(
        f"demo data loader vs demo training ({DEMO_CONFIG}, batch {solver.ims_per_batch}, "
        f"{cfg.dataloader.num_workers} loader workers)",
        load,
        train,
        f"training iteration ({solver.optimizer}, forward + backward + step)",
        note=f"{1 / load:.0f} images/s loaded vs {1 / train:.1f} images/s trained; "
        f"speed-up = loader / training throughput (target >= 3)",
    )


if __name__ == "__main__":

    def _print(name, d, r, ref, note=""):
        print(f"{name}: loader {d * 1e3:.2f} ms/image, {ref} {r * 1e3:.2f} ms/image, x{r / d:.1f} {note}")

    run(_print)
