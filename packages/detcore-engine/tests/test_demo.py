"""The demo job's plumbing (``python -m detcore.engine.demo``) on a tiny shapes set and two iterations; the
real demo (600 images, the full schedule, AP targets) is ``nox -s demo``, not a test."""

from __future__ import annotations

import json

import pytest

from detcore.archs import get_config
from detcore.engine import demo
from detcore.engine.data import make_shapes_dataset


def test_demo_config_is_the_documented_recipe():
    cfg = get_config(demo.DEMO_CONFIG)
    assert cfg.model.meta_architecture == "GeneralizedRCNN"
    assert cfg.model.roi_heads.mask_on is True
    assert cfg.model.roi_heads.num_classes == 3
    assert cfg.model.backbone.resnet.norm == "BN" and cfg.model.backbone.resnet.freeze_at == 0
    assert cfg.solver.optimizer == "AdamW" and cfg.solver.clip_gradients.enabled
    # the schedule README.md's demo table was measured with
    assert (cfg.solver.base_lr, cfg.solver.max_iter, cfg.solver.warmup_iters) == (0.0024, 1000, 250)
    assert cfg.solver.lr_scheduler_name == "WarmupCosineLR" and cfg.solver.ims_per_batch == 4
    assert cfg.model.roi_heads.batch_size_per_image == 256
    assert cfg.input.min_size_test == 256


def test_demo_writes_outputs_and_reports_missed_targets(tmp_path):
    root = tmp_path / "shapes"
    make_shapes_dataset(root, num_train=6, num_val=3, image_size=(160, 128))
    out = tmp_path / "demo"
    argv = [
        "--output-dir",
        str(out),
        "--data-root",
        str(root),
        "--num-predictions",
        "2",
        "--threads",
        "1",
        "--seed",
        "3",
        "solver.max_iter=2",
        "solver.steps=[]",
        "solver.warmup_iters=1",
        "dataloader.num_workers=0",
    ]
    # two iterations cannot reach the AP targets: exit status 1, everything still written
    assert demo.main(argv) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"] == demo.DEMO_CONFIG
    assert summary["seed"] == 3 and summary["torch_threads"] == 1
    assert summary["passed"]["bbox_AP"] is False and summary["passed"]["segm_AP"] is False
    results = json.loads((out / "eval" / "results.json").read_text())
    assert summary["measured"]["bbox_AP"] == results["bbox"]["AP"]
    assert set(results) == {"bbox", "segm"}
    assert (out / "model_final.pth").is_file() and (out / "last_checkpoint").is_file()
    assert sorted(p.name for p in (out / "predictions").glob("*.png")) == ["000001.png", "000002.png"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) >= 1
    # a second run into the same directory is refused instead of resuming or overwriting silently
    with pytest.raises(SystemExit, match="previous run"):
        demo.main(argv)
