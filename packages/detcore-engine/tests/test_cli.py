"""The ``detcore`` train / eval / predict / config subcommands, run in-process through
``detcore.plugins.cli.main`` on a tiny model and an 8-image shapes dataset."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from PIL import Image

from detcore.archs import get_config, load_config
from detcore.engine.data import make_shapes_dataset
from detcore.plugins.cli import main

TINY = [
    "model.backbone.resnet.stem_out_channels=8",
    "model.backbone.resnet.res2_out_channels=16",
    "model.backbone.resnet.width_per_group=4",
    "model.backbone.fpn.out_channels=16",
    "model.roi_heads.box_head.fc_dim=32",
    "model.roi_heads.mask_head.conv_dim=16",
    "model.roi_heads.num_classes=3",
    "model.roi_heads.batch_size_per_image=64",
    "model.proposal_generator.pre_nms_topk_train=200",
    "model.proposal_generator.post_nms_topk_train=100",
    "model.proposal_generator.pre_nms_topk_test=200",
    "model.proposal_generator.post_nms_topk_test=100",
    "input.min_size_train=[128]",
    "input.max_size_train=160",
    "input.min_size_test=128",
    "input.max_size_test=160",
]


def _train_args(out, root, max_iter=4, *extra):
    return [
        "train",
        "--config",
        "mask_rcnn_R_50_FPN",
        "--output-dir",
        str(out),
        "--dataset-root",
        str(root),
        "--max-iter",
        str(max_iter),
        "--batch-size",
        "2",
        "--checkpoint-period",
        "2",
        "--log-period",
        "1",
        "--warmup-iters",
        "2",
        "--lr",
        "0.0002",
        "--num-workers",
        "0",
        "--quiet",
        *extra,
        *TINY,
    ]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: the test machine's cores are shared, oversubscription makes runs slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(root, num_train=8, num_val=3, image_size=(128, 128))
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shapes_root):
    out = tmp_path_factory.mktemp("run")
    assert main(_train_args(out, shapes_root)) == 0
    return out


def _metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_writes_metrics_checkpoints_and_eval(trained, shapes_root):
    rows = _metrics(trained / "metrics.jsonl")
    assert [r["iteration"] for r in rows if "total_loss" in r] == [0, 1, 2, 3]
    for r in rows:
        if "total_loss" in r:
            assert math.isfinite(r["total_loss"]) and r["total_loss"] > 0
            assert "loss_mask" in r and "loss_rpn_cls" in r
    for name in ("model_0000001.pth", "model_0000003.pth", "model_final.pth"):
        assert (trained / name).is_file(), name
    assert (trained / "last_checkpoint").read_text() == "model_final.pth"
    results = json.loads((trained / "eval" / "results.json").read_text())
    assert set(results) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        assert "AP" in results[task] and "AP50" in results[task]
        assert results[task]["AP"] is None or 0 <= results[task]["AP"] <= 100
    # the resolved config round-trips and carries the overrides, the solver and the datasets actually used
    cfg = load_config(trained / "config.yaml")
    used = [
        "solver.max_iter=4",
        "solver.ims_per_batch=2",
        "solver.checkpoint_period=2",
        "solver.warmup_iters=2",
        "solver.base_lr=0.0002",
        "dataloader.num_workers=0",
    ]
    expected = get_config("mask_rcnn_R_50_FPN", [*TINY, *used])
    assert cfg.model == expected.model and cfg.input == expected.input
    assert cfg.solver == expected.solver and cfg.dataloader == expected.dataloader
    assert cfg.solver.steps == (60000, 80000)  # not a flag: the config's
    assert cfg.datasets.train == (str(shapes_root / "annotations" / "instances_train.json"),)
    assert cfg.datasets.test == (str(shapes_root / "annotations" / "instances_val.json"),)
    assert json.loads((trained / "metadata.json").read_text())["thing_classes"] == [
        "circle",
        "square",
        "triangle",
    ]


def test_resume_continues_from_last_checkpoint(trained, shapes_root, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    capsys.readouterr()
    assert main(_train_args(run, shapes_root, 6, "--resume", "--no-eval")) == 0
    assert "iterations 4..5" in capsys.readouterr().err
    iters = [r["iteration"] for r in _metrics(run / "metrics.jsonl") if "total_loss" in r]
    assert iters == [0, 1, 2, 3, 4, 5]
    assert (run / "model_0000005.pth").is_file()
    assert (run / "last_checkpoint").read_text() == "model_final.pth"
    import torch

    assert torch.load(run / "model_final.pth", weights_only=False)["iteration"] == 5
    # the resumed iterations are those of an uninterrupted 6-iteration run (model, optimizer, scheduler,
    # sampler and RNG states all restored)
    ref = tmp_path / "ref"
    assert main(_train_args(ref, shapes_root, 6, "--no-eval")) == 0
    ref_rows = {r["iteration"]: r for r in _metrics(ref / "metrics.jsonl") if "total_loss" in r}
    res_rows = {r["iteration"]: r for r in _metrics(run / "metrics.jsonl") if "total_loss" in r}
    for it in range(6):
        for key in ("total_loss", "loss_cls", "loss_mask", "lr"):
            assert res_rows[it][key] == ref_rows[it][key], (it, key)  # exact
    # resuming a finished run does nothing
    assert main(_train_args(run, shapes_root, 6, "--resume", "--no-eval")) == 0
    assert "nothing to do" in capsys.readouterr().err


def test_eval_reproduces_training_evaluation(trained, shapes_root, tmp_path):
    out = tmp_path / "ev"
    rc = main(
        [
            "eval",
            "--config",
            str(trained / "config.yaml"),
            "--weights",
            str(trained / "model_final.pth"),
            "--output-dir",
            str(out),
            "--coco-json",
            str(shapes_root / "annotations" / "instances_val.json"),
            "--image-root",
            str(shapes_root / "val"),
        ]
    )
    assert rc == 0
    got = json.loads((out / "results.json").read_text())
    assert got == json.loads((trained / "eval" / "results.json").read_text())


def test_eval_with_test_time_augmentation(trained, shapes_root, tmp_path):
    def run(out, *overrides):
        argv = [
            "eval",
            "--config",
            str(trained / "config.yaml"),
            "--weights",
            str(trained / "model_final.pth"),
        ]
        argv += ["--output-dir", str(out), "--dataset-root", str(shapes_root), *overrides]
        assert main(argv) == 0
        return json.loads((out / "results.json").read_text())

    plain = run(tmp_path / "plain")
    # one augmentation at the test size, no flip: GeneralizedRCNNWithTTA equals the plain model
    single = run(tmp_path / "one", "test.aug.enabled=true", "test.aug.min_sizes=[128]", "test.aug.flip=false")
    assert single == plain
    # a real multi-scale + flip run goes through the TTA merge and still evaluates every task
    multi = run(
        tmp_path / "multi", "test.aug.enabled=true", "test.aug.min_sizes=[96,128]", "test.aug.flip=true"
    )
    assert set(multi) == set(plain) == {"bbox", "segm"}


def test_predict_writes_png_and_json_per_image(trained, shapes_root, tmp_path):
    out = tmp_path / "pred"
    rc = main(
        [
            "predict",
            "--config",
            str(trained / "config.yaml"),
            "--weights",
            str(trained / "model_final.pth"),
            "--output-dir",
            str(out),
            "--score-threshold",
            "0",
            str(shapes_root / "val"),
        ]
    )
    assert rc == 0
    names = sorted(p.stem for p in (shapes_root / "val").glob("*.png"))
    assert len(names) == 3
    for n in names:
        with Image.open(out / f"{n}.png") as im:
            assert im.size == (128, 128)
        d = json.loads((out / f"{n}.json").read_text())
        assert d["height"] == 128 and d["width"] == 128
        assert len(d["boxes"]) == len(d["scores"]) == len(d["classes"]) == len(d["class_names"])
        assert all(len(b) == 4 for b in d["boxes"])
        assert all(0 <= c < 3 for c in d["classes"])
        assert all(s >= 0 for s in d["scores"])


def test_config_show_parses_and_reflects_overrides(capsys):
    assert main(["config", "show", "mask_rcnn_R_50_FPN", "model.roi_heads.num_classes=7"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["model"]["roi_heads"]["num_classes"] == 7
    assert data["model"]["roi_heads"]["mask_on"] is True
    from detcore.archs import config_from_dict

    assert config_from_dict(data) == get_config("mask_rcnn_R_50_FPN", ["model.roi_heads.num_classes=7"])


@pytest.mark.parametrize("command", [["train"], ["eval"], ["predict"], ["config"], ["config", "show"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command, "--help"])
    assert e.value.code == 0
    assert "usage: detcore " + " ".join(command) in capsys.readouterr().out


def test_errors_are_clear(trained, tmp_path, capsys):
    assert main(["config", "show", "no_such_config"]) == 2
    err = capsys.readouterr().err
    assert "unknown config 'no_such_config'" in err and "mask_rcnn_R_50_FPN" in err
    assert main(["config", "show", "mask_rcnn_R_50_FPN", "model.roi_heads.nope=1"]) == 1
    assert "nope" in capsys.readouterr().err
    missing = tmp_path / "missing.pth"
    rc = main(
        [
            "eval",
            "--config",
            str(trained / "config.yaml"),
            "--weights",
            str(missing),
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert rc == 2
    assert f"weights file '{missing}' not found" in capsys.readouterr().err
    rc = main(
        [
            "predict", "--config", str(trained / "config.yaml"), "--weights", str(missing),
            "--output-dir", str(tmp_path), str(trained / "config.yaml"),
        ]
    )  # fmt: skip
    assert rc == 2
    assert "not found" in capsys.readouterr().err
    assert (
        main(["train", "--config", "mask_rcnn_R_50_FPN", "--output-dir", str(tmp_path), "--max-iter", "0"])
        == 2
    )
    assert "--max-iter must be > 0" in capsys.readouterr().err
    rc = main(["train", "--config", "mask_rcnn_R_50_FPN", "--output-dir", str(tmp_path), "--dataset", "nope"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'nope'" in err and "shapes_train" in err
    assert main(["train", "--config", "mask_rcnn_R_50_FPN", "--output-dir", str(tmp_path / "x"), "--dataset-root",
                 str(tmp_path / "nowhere")]) == 2  # fmt: skip
    assert "instances_train.json" in capsys.readouterr().err


def test_python_m_detcore_engine(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "detcore.engine", "config", "show", "rpn_R_50_FPN", "input.min_size_test=320"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["input"]["min_size_test"] == 320
    proc = subprocess.run(
        [sys.executable, "-m", "detcore.engine", "config", "show", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2 and "unknown config 'nope'" in proc.stderr


def _config_solver_args(out, root, *extra):
    return [
        "train", "--config", "mask_rcnn_R_50_FPN", "--output-dir", str(out), "--dataset-root", str(root),
        "--no-eval", "--quiet", "--log-period", "1", *extra, *TINY, "dataloader.num_workers=0",
        "solver.max_iter=3", "solver.ims_per_batch=2", "solver.base_lr=0.0006", "solver.steps=[2]",
        "solver.gamma=0.5", "solver.warmup_iters=1", "solver.warmup_factor=0.25", "solver.checkpoint_period=100",
    ]  # fmt: skip


def _lrs(out):
    return [(r["iteration"], r["lr"]) for r in _metrics(out / "metrics.jsonl") if "total_loss" in r]


def test_train_takes_the_solver_from_the_config(shapes_root, tmp_path):
    out = tmp_path / "a"
    assert main(_config_solver_args(out, shapes_root)) == 0
    # warm-up 0.25 at iteration 0, base_lr 0.0006, x0.5 from iteration 2
    got = _lrs(out)
    assert [i for i, _ in got] == [0, 1, 2]
    assert [lr for _, lr in got] == pytest.approx([0.00015, 0.0006, 0.0003], rel=1e-12)
    cfg = load_config(out / "config.yaml")
    assert (cfg.solver.max_iter, cfg.solver.base_lr, cfg.solver.steps, cfg.solver.gamma) == (
        3,
        0.0006,
        (2,),
        0.5,
    )
    assert cfg.solver.ims_per_batch == 2 and cfg.dataloader.num_workers == 0
    # flags given win over the config, and the written config holds what was used
    out = tmp_path / "b"
    assert main(_config_solver_args(out, shapes_root, "--max-iter", "2", "--lr", "0.001", "--steps", "")) == 0
    assert _lrs(out) == [(0, pytest.approx(0.00025, rel=1e-12)), (1, pytest.approx(0.001, rel=1e-12))]
    cfg = load_config(out / "config.yaml")
    assert (cfg.solver.max_iter, cfg.solver.base_lr, cfg.solver.steps) == (2, 0.001, ())


def test_train_gradient_clipping_and_amp_from_the_config(shapes_root, tmp_path, monkeypatch):
    import detcore.engine.train as train_mod
    import detcore.engine.train.optimizer as opt_mod
    from detcore.engine.train import GradientClipConfig

    clips = []
    real_clip = opt_mod.clip_gradients

    def spy_clip(optimizer, cfg):
        clips.append(cfg)
        return real_clip(optimizer, cfg)

    precisions = []

    class SpyAMPTrainer(train_mod.AMPTrainer):
        def __init__(self, *args, **kwargs):
            precisions.append(kwargs.get("precision"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(opt_mod, "clip_gradients", spy_clip)
    monkeypatch.setattr(train_mod, "AMPTrainer", SpyAMPTrainer)
    clip = "solver.clip_gradients={enabled: true, clip_type: norm, clip_value: 0.5}"
    assert main([*_config_solver_args(tmp_path / "c", shapes_root, "--max-iter", "2"), clip]) == 0
    assert clips == [GradientClipConfig("norm", 0.5, 2.0)] * 2 and precisions == []
    amp = ["solver.amp.enabled=true", "solver.amp.precision=bf16"]
    assert main([*_config_solver_args(tmp_path / "d", shapes_root, "--max-iter", "2"), clip, *amp]) == 0
    assert precisions == ["bf16"] and len(clips) == 4
    rows = [r for r in _metrics(tmp_path / "d" / "metrics.jsonl") if "total_loss" in r]
    assert [r["iteration"] for r in rows] == [0, 1] and all(math.isfinite(r["total_loss"]) for r in rows)


def test_train_channels_last_from_the_config(shapes_root, tmp_path):
    import torch

    assert main([*_config_solver_args(tmp_path / "a", shapes_root, "--max-iter", "1")]) == 0
    args = [*_config_solver_args(tmp_path / "b", shapes_root, "--max-iter", "1"), "solver.channels_last=true"]
    assert main(args) == 0
    state = torch.load(tmp_path / "b" / "model_final.pth", weights_only=False)
    state = state.get("model", state)
    convs = [v for k, v in state.items() if v.dim() == 4 and v.shape[-1] > 1]
    assert convs and all(v.is_contiguous(memory_format=torch.channels_last) for v in convs)
    # same weights, same data: the first loss agrees up to float32 summation order
    (ra,) = [r for r in _metrics(tmp_path / "a" / "metrics.jsonl") if "total_loss" in r]
    (rb,) = [r for r in _metrics(tmp_path / "b" / "metrics.jsonl") if "total_loss" in r]
    assert math.isclose(ra["total_loss"], rb["total_loss"], rel_tol=1e-4)


def test_train_solver_errors(shapes_root, tmp_path, capsys):
    base = [
        "train",
        "--config",
        "mask_rcnn_R_50_FPN",
        "--output-dir",
        str(tmp_path),
        "--dataset-root",
        str(shapes_root),
    ]
    assert main([*base, "solver.max_iter=0"]) == 1
    assert "max_iter must be > 0" in capsys.readouterr().err
    assert main([*base, "solver.optimizer=Adam"]) == 1
    assert "optimizer must be 'SGD' or 'AdamW'" in capsys.readouterr().err
    assert main([*base, "--steps", "10,x"]) == 2
    assert "--steps must be comma-separated" in capsys.readouterr().err
    assert main([*base, "--steps", "20,10"]) == 2
    assert "steps must be increasing" in capsys.readouterr().err
    assert main([*base, "--checkpoint-period", "0"]) == 2
    assert "--checkpoint-period must be > 0" in capsys.readouterr().err
    # detectron2's AMP (fp16) needs CUDA; the error says so and names bf16
    args = [*_config_solver_args(tmp_path / "amp", shapes_root, "--max-iter", "1"), "solver.amp.enabled=true"]
    assert main(args) == 1
    assert "precision='fp16' needs a CUDA model" in capsys.readouterr().err
