"""detcore-engine's subcommands of the ``detcore`` command line: ``train``, ``eval``, ``predict``, ``config``.

They are added through the ``detcore_add_cli_commands`` hook (see ``detcore.engine._plugin``)::

    detcore train --config mask_rcnn_R_50_FPN --output-dir out model.roi_heads.num_classes=3
    detcore train --config mask_rcnn_R_50_FPN --output-dir out --resume
    detcore eval --config out/config.yaml --weights out/model_final.pth --output-dir out/eval2
    detcore predict --config out/config.yaml --weights out/model_final.pth --output-dir vis images/
    detcore config show mask_rcnn_R_50_FPN model.roi_heads.num_classes=3

``--config`` takes a config file or the name of a config shipped with ``detcore.archs``; trailing
``key=value`` arguments override config keys (``model.roi_heads.num_classes=3``).

``detcore train`` takes its solver from the config's ``solver`` section (``cfg.solver``: optimizer, learning
rate and schedule, batch size, iterations, checkpoint period, gradient clipping, mixed precision), e.g.
``solver.base_lr=0.0006``, and the training data loader's settings from ``cfg.dataloader``. The flags
``--max-iter``, ``--lr``, ``--batch-size``, ``--optimizer``, ``--weight-decay``, ``--steps``,
``--warmup-iters``, ``--warmup-factor``, ``--checkpoint-period`` and ``--num-workers``, when given, override
the config (flag > ``key=value`` override > config file). The data come from ``--dataset`` /
``--dataset-root`` / ``--eval-dataset`` (``cfg.datasets`` is not read; the written config records the
datasets used). ``train`` writes into its output directory: ``config.yaml`` (the resolved config, with the
solver, data loader and datasets actually used), ``metadata.json`` (the class names), ``metrics.jsonl``,
``model_<iter>.pth`` / ``model_final.pth``, ``last_checkpoint`` and ``eval/results.json``
(``{"bbox": {"AP": ...}, "segm": {...}}``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["CLIError", "add_commands"]

logger = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class CLIError(Exception):
    """A user error of the command line: printed as ``detcore <command>: error: <message>``, exit code 2."""


# ----------------------------------------------------------------------------------------------------------
# helpers


def _load_cfg(name_or_file: str, overrides: list[str]):
    from detcore.archs import get_config, list_configs, load_config

    path = Path(name_or_file)
    if path.is_file():
        return load_config(path, overrides)
    if path.suffix in (".yaml", ".yml") or os.sep in name_or_file:
        raise CLIError(f"config file {name_or_file!r} not found")
    if name_or_file not in list_configs():
        raise CLIError(
            f"unknown config {name_or_file!r}: not a file and not a named config; named configs: "
            f"{', '.join(list_configs())}"
        )
    return get_config(name_or_file, overrides)


def _check_overrides(overrides: list[str]) -> list[str]:
    for o in overrides:
        if "=" not in o:
            raise CLIError(f"expected a 'dotted.key=value' config override, got {o!r}")
    return list(overrides)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_json_safe(data), indent=2) + "\n")
    tmp.replace(path)


def _num_classes(cfg) -> int | None:
    roi = cfg.model.roi_heads
    if cfg.model.meta_architecture == "RetinaNet":
        return cfg.model.retinanet.num_classes
    return getattr(roi, "num_classes", None) if roi is not None else None


def _categories(json_file: str | os.PathLike) -> list[dict]:
    with open(json_file) as f:
        cats = json.load(f).get("categories", [])
    return sorted(cats, key=lambda c: c["id"])


class _Split:
    """A dataset split: its dicts loader, COCO json (for evaluation) and class names."""

    def __init__(self, dicts_fn, json_file: str | None, thing_classes: list[str] | None, name: str):
        self.dicts_fn = dicts_fn
        self.json_file = json_file
        self.thing_classes = thing_classes
        self.name = name


def _coco_split(json_file: str | os.PathLike, image_root: str | os.PathLike, what: str) -> _Split:
    from detcore.engine.data.coco import load_coco_json

    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    if not os.path.isfile(json_file):
        raise CLIError(f"{what}: COCO json {json_file!r} not found")
    if not os.path.isdir(image_root):
        raise CLIError(f"{what}: image directory {image_root!r} not found")
    classes = [str(c["name"]) for c in _categories(json_file)]
    return _Split(lambda: load_coco_json(json_file, image_root), json_file, classes, json_file)


def _resolve_split(
    args: argparse.Namespace, split: str, dataset: str | None, what: str, filter_empty: bool = False
) -> _Split:
    """``--coco-json/--image-root`` (eval only), else ``--dataset-root`` (shapes layout), else a name;
    ``filter_empty`` drops images without non-crowd annotations."""
    coco_json = getattr(args, "coco_json", None) if split == "val" else None
    if coco_json or (split == "val" and getattr(args, "image_root", None)):
        if not (coco_json and args.image_root):
            raise CLIError("--coco-json and --image-root must be given together")
        return _coco_split(coco_json, args.image_root, what)
    root = getattr(args, "dataset_root", None)
    if root:
        root = Path(root)
        out = _coco_split(root / "annotations" / f"instances_{split}.json", root / split, what)
        if filter_empty:
            load = out.dicts_fn
            out.dicts_fn = lambda: [
                d for d in load() if any(a.get("iscrowd", 0) == 0 for a in d.get("annotations", []))
            ]
        return out
    from detcore.engine.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts

    if dataset not in DatasetCatalog:
        raise CLIError(
            f"{what}: unknown dataset {dataset!r}; registered: {', '.join(DatasetCatalog.list()) or '(none)'}"
        )
    meta = MetadataCatalog.get(dataset)
    return _Split(
        lambda: get_detection_dataset_dicts(dataset, filter_empty=filter_empty),
        getattr(meta, "json_file", None),
        list(getattr(meta, "thing_classes", None) or []) or None,
        dataset,
    )


#: ``detcore train`` flag -> the ``cfg.solver`` / ``cfg.dataloader`` field it overrides when given
_SOLVER_FLAGS = {
    "max_iter": ("solver", "max_iter"),
    "lr": ("solver", "base_lr"),
    "batch_size": ("solver", "ims_per_batch"),
    "optimizer": ("solver", "optimizer"),
    "weight_decay": ("solver", "weight_decay"),
    "steps": ("solver", "steps"),
    "warmup_iters": ("solver", "warmup_iters"),
    "warmup_factor": ("solver", "warmup_factor"),
    "checkpoint_period": ("solver", "checkpoint_period"),
    "num_workers": ("dataloader", "num_workers"),
}


def _parse_steps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise CLIError(f"--steps must be comma-separated iterations like 60000,80000, got {text!r}") from None


def _apply_flags(cfg, args: argparse.Namespace):
    """``cfg`` with the solver / data loader flags that were given (not None) replacing its values."""
    import dataclasses

    sections: dict[str, dict[str, Any]] = {"solver": {}, "dataloader": {}}
    for flag, (section, name) in _SOLVER_FLAGS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        sections[section][name] = _parse_steps(value) if flag == "steps" else value
    try:
        return dataclasses.replace(
            cfg,
            solver=dataclasses.replace(cfg.solver, **sections["solver"]),
            dataloader=dataclasses.replace(cfg.dataloader, **sections["dataloader"]),
        )
    except ValueError as e:
        raise CLIError(f"invalid solver settings from the flags: {e}") from e


def _check_classes(cfg, classes: list[str] | None) -> None:
    n = _num_classes(cfg)
    if classes is not None and n is not None and n < len(classes):
        raise CLIError(
            f"the model predicts {n} classes but the dataset has {len(classes)} ({', '.join(classes)}); "
            f"add the override model.roi_heads.num_classes={len(classes)} (RetinaNet: "
            f"model.retinanet.num_classes={len(classes)})"
        )


def _class_names(args: argparse.Namespace, cfg) -> list[str] | None:
    """``--classes``, else ``metadata.json`` next to the weights, else None."""
    if getattr(args, "classes", None):
        return [c.strip() for c in args.classes.split(",") if c.strip()]
    meta = Path(args.weights).resolve().parent / "metadata.json"
    if meta.is_file():
        classes = json.loads(meta.read_text()).get("thing_classes")
        if classes:
            return [str(c) for c in classes]
    return None


def _build_loaded_model(cfg, weights: str, device: str):
    from detcore.archs import build_model
    from detcore.engine.predictor import load_weights

    if not os.path.isfile(weights):
        raise CLIError(f"weights file {weights!r} not found")
    model = build_model(cfg).to(device)
    load_weights(model, weights)
    model.eval()
    return model


def _test_mapper(cfg):
    from detcore.engine.data import DatasetMapper

    return DatasetMapper(**DatasetMapper.from_config(cfg, is_train=False))


def _evaluate(model, cfg, split: _Split, classes: list[str] | None, out_dir: Path) -> dict:
    """COCO AP of ``model`` on ``split``; writes ``out_dir/results.json``. With ``cfg.test.aug.enabled``
    the model runs under :class:`~detcore.archs.GeneralizedRCNNWithTTA` (detectron2's ``TEST.AUG``)."""
    from detcore.engine.data import build_detection_test_loader
    from detcore.engine.data.mapper import roi_heads_flag
    from detcore.engine.evaluation import COCOEvaluator, inference_on_dataset

    if split.json_file is None:
        raise CLIError(f"dataset {split.name!r} has no COCO json: cannot evaluate")
    if cfg.test.aug.enabled:
        from detcore.archs import GeneralizedRCNNWithTTA

        try:
            model = GeneralizedRCNNWithTTA(cfg, model)
        except (TypeError, NotImplementedError) as e:
            raise CLIError(f"test.aug.enabled=true: {e}") from e
    loader = build_detection_test_loader(split.dicts_fn(), mapper=_test_mapper(cfg))
    tasks = (
        ["bbox"]
        + (["segm"] if roi_heads_flag(cfg, "mask_on") else [])
        + (["keypoints"] if roi_heads_flag(cfg, "keypoint_on") else [])
    )
    evaluator = COCOEvaluator(split.json_file, thing_classes=classes, tasks=tasks)
    results = dict(inference_on_dataset(model, loader, evaluator))
    _write_json(out_dir / "results.json", results)
    return results


# ----------------------------------------------------------------------------------------------------------
# commands


def _config_show(args: argparse.Namespace) -> int:
    from detcore.archs import dump_config

    cfg = _load_cfg(args.config, _check_overrides(args.overrides))
    sys.stdout.write(dump_config(cfg))
    return 0


def _config_list(args: argparse.Namespace) -> int:
    from detcore.archs import list_configs

    for name in list_configs():
        print(name)
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch

    from detcore.archs import build_model, dump_config
    from detcore.engine.checkpoint import Checkpointer
    from detcore.engine.data import DatasetMapper, build_detection_train_loader
    from detcore.engine.data.samplers import (
        RepeatFactorTrainingSampler,
        TrainingSampler,
        repeat_factors_from_category_frequency,
    )
    from detcore.engine.train import (
        AMPTrainer,
        CommonMetricPrinter,
        EvalHook,
        IterationTimer,
        JSONWriter,
        LRScheduler,
        PeriodicCheckpointer,
        PeriodicWriter,
        SimpleTrainer,
        build_lr_scheduler,
        build_optimizer_from_config,
    )

    for flag, name in (("max_iter", "--max-iter"), ("batch_size", "--batch-size"), ("lr", "--lr")):
        value = getattr(args, flag)
        if value is not None and not value > 0:
            raise CLIError(f"{name} must be > 0, got {value}")
    for flag, name in (("warmup_iters", "--warmup-iters"), ("num_workers", "--num-workers")):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise CLIError(f"{name} must be >= 0, got {value}")
    if args.checkpoint_period is not None and args.checkpoint_period <= 0:
        raise CLIError(f"--checkpoint-period must be > 0, got {args.checkpoint_period}")
    cfg = _apply_flags(_load_cfg(args.config, _check_overrides(args.overrides)), args)
    solver, loader_cfg = cfg.solver, cfg.dataloader
    out = Path(args.output_dir)
    train_split = _resolve_split(
        args, "train", args.dataset, "training data", filter_empty=loader_cfg.filter_empty_annotations
    )
    val_split = None if args.no_eval else _resolve_split(args, "val", args.eval_dataset, "evaluation data")
    classes = train_split.thing_classes
    _check_classes(cfg, classes)
    import dataclasses

    from detcore.archs import DatasetsConfig

    cfg = dataclasses.replace(
        cfg,
        datasets=DatasetsConfig(
            train=(train_split.name,), test=(val_split.name,) if val_split is not None else ()
        ),
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(cfg))
    _write_json(out / "metadata.json", {"thing_classes": classes, "dataset": train_split.name})

    import random

    import numpy as np

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    dicts = train_split.dicts_fn()
    if not dicts:
        raise CLIError(f"training dataset {train_split.name!r} has no images with annotations")
    mapper = DatasetMapper(**DatasetMapper.from_config(cfg, is_train=True))
    if loader_cfg.sampler_train == "RepeatFactorTrainingSampler":
        factors = repeat_factors_from_category_frequency(dicts, loader_cfg.repeat_threshold)
        sampler = RepeatFactorTrainingSampler(factors, seed=args.seed)
    else:
        sampler = TrainingSampler(len(dicts), seed=args.seed)
    loader = build_detection_train_loader(
        dicts,
        mapper=mapper,
        sampler=sampler,
        total_batch_size=solver.ims_per_batch,
        aspect_ratio_grouping=loader_cfg.aspect_ratio_grouping,
        num_workers=loader_cfg.num_workers,
    )
    model = build_model(cfg).to(args.device)
    if solver.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer_from_config(model, solver)
    scheduler = build_lr_scheduler(
        optimizer,
        solver.lr_scheduler_name,
        solver.max_iter,
        steps=solver.steps,
        gamma=solver.gamma,
        base_lr_end=solver.base_lr_end,
        warmup_iters=solver.warmup_iters,
        warmup_factor=solver.warmup_factor,
        warmup_method=solver.warmup_method,
    )
    if solver.amp.enabled:
        trainer = AMPTrainer(model, loader, optimizer, precision=solver.amp.precision)
    else:
        trainer = SimpleTrainer(model, loader, optimizer)
    trainer.scheduler = scheduler
    extra = {"grad_scaler": trainer.grad_scaler} if getattr(trainer, "grad_scaler", None) is not None else {}
    checkpointer = Checkpointer(
        model, out, optimizer=optimizer, scheduler=scheduler, sampler=sampler, **extra
    )
    if args.resume and not checkpointer.has_checkpoint():
        print(f"detcore train: no last_checkpoint in {str(out)!r}; starting from scratch", file=sys.stderr)
    start = checkpointer.resume_or_load(args.weights, resume=args.resume).get("iteration", -1) + 1
    max_iter = solver.max_iter
    if start >= max_iter:
        print(f"detcore train: already trained to max_iter {max_iter}; nothing to do", file=sys.stderr)
        return 0

    def do_eval() -> dict:
        return _evaluate(model, cfg, val_split, classes, out / "eval")

    hooks: list = [
        IterationTimer(),
        LRScheduler(),
        PeriodicCheckpointer(checkpointer, solver.checkpoint_period),
    ]
    if val_split is not None:
        hooks.append(EvalHook(args.eval_period, do_eval))
    writers = [JSONWriter(out / "metrics.jsonl")]
    if not args.quiet:
        writers.append(CommonMetricPrinter(max_iter))
    hooks.append(PeriodicWriter(writers, period=args.log_period))
    trainer.register_hooks(hooks)
    print(f"detcore train: iterations {start}..{max_iter - 1}, output in {str(out)!r}", file=sys.stderr)
    trainer.train(start, max_iter)
    return 0


def _eval(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args.config, _check_overrides(args.overrides))
    split = _resolve_split(args, "val", args.dataset, "evaluation data")
    model = _build_loaded_model(cfg, args.weights, args.device)
    classes = _class_names(args, cfg)
    results = _evaluate(model, cfg, split, classes, Path(args.output_dir))
    print(json.dumps(_json_safe(results), indent=2))
    return 0


def _list_inputs(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES))
        elif p.is_file():
            files.append(p)
        else:
            raise CLIError(f"input {item!r} is neither an image file nor a directory")
    if not files:
        raise CLIError(f"no images found in {', '.join(inputs)}")
    return files


def _predict(args: argparse.Namespace) -> int:
    from detcore.engine.data.detection_utils import read_image
    from detcore.engine.predictor import DefaultPredictor
    from detcore.engine.visualizer import Visualizer

    overrides = [a for a in args.inputs if "=" in a and not os.path.exists(a)]
    cfg = _load_cfg(args.config, overrides)
    files = _list_inputs([a for a in args.inputs if a not in overrides])
    if not os.path.isfile(args.weights):
        raise CLIError(f"weights file {args.weights!r} not found")
    predictor = DefaultPredictor(cfg, args.weights, device=args.device)
    classes = _class_names(args, cfg)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        image = read_image(str(f), format=cfg.model.input_format)
        outputs = predictor(image)
        inst = outputs["instances"].to("cpu")
        inst = inst[inst.scores >= args.score_threshold]
        rgb = image if cfg.model.input_format == "RGB" else image[:, :, ::-1]
        vis = Visualizer(rgb, metadata={"thing_classes": classes} if classes else None)
        vis.draw_instance_predictions(inst).save(out / f"{f.stem}.png")
        cls_ids = inst.pred_classes.tolist()
        _write_json(
            out / f"{f.stem}.json",
            {
                "file": str(f),
                "height": int(image.shape[0]),
                "width": int(image.shape[1]),
                "boxes": inst.pred_boxes.tensor.tolist(),
                "scores": inst.scores.tolist(),
                "classes": cls_ids,
                "class_names": [classes[c] if classes and c < len(classes) else str(c) for c in cls_ids],
            },
        )
        print(f"{f}: {len(inst)} instances -> {out / (f.stem + '.png')}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# parsers


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` only for options with a meaningful default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default in ("", []):
            return action.help
        return super()._get_help_string(action)


def _guarded(func):
    """Run ``func(args)``; a :class:`CLIError` prints ``detcore <command>: error: ...`` and gives exit code 2;
    ValueError / FileNotFoundError / KeyError (bad config keys, unreadable files) and a diverged training
    (FloatingPointError) print the same way and give exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except CLIError as e:
            print(f"detcore {args.command}: error: {e}", file=sys.stderr)
            return 2
        except (ValueError, FileNotFoundError, KeyError) as e:
            print(f"detcore {args.command}: error: {e}", file=sys.stderr)
            return 1
        except FloatingPointError as e:
            print(
                f"detcore {args.command}: error: {e} (try a lower --lr or more --warmup-iters)",
                file=sys.stderr,
            )
            return 1

    return run


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="FILE_OR_NAME", help="config YAML file or named config")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. model.roi_heads.num_classes=3",
    )
    p.add_argument("--device", default="cpu", help="torch device")


def _add_data_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--dataset",
        default=default,
        help="registered dataset name (see `detcore plugins --kind dataset`)",
    )
    p.add_argument(
        "--dataset-root",
        default=None,
        metavar="DIR",
        help="a directory in the shapes layout (annotations/instances_{train,val}.json, train/, val/) "
        "used instead of the registered datasets",
    )


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``eval``, ``predict`` and ``config`` to the ``detcore`` parser."""
    fmt = _HelpFormatter

    p = subparsers.add_parser(
        "train",
        help="train a model",
        formatter_class=fmt,
        description="Train a model on a dataset; writes config.yaml, metadata.json, metrics.jsonl, "
        "checkpoints, last_checkpoint and eval/results.json into --output-dir.",
    )
    _add_config_args(p)
    p.add_argument("--output-dir", required=True, metavar="DIR", help="where outputs go")
    p.add_argument("--resume", action="store_true", help="continue from DIR/last_checkpoint")
    p.add_argument("--weights", default=None, help="initial weights (ignored when resuming)")
    _add_data_args(p, "shapes_train")
    p.add_argument("--eval-dataset", default="shapes_val", help="registered dataset evaluated at the end")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation")
    p.add_argument(
        "--max-iter", type=int, default=None, help="training iterations (default: solver.max_iter)"
    )
    p.add_argument("--lr", type=float, default=None, help="base learning rate (default: solver.base_lr)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="images per iteration (default: solver.ims_per_batch)"
    )
    p.add_argument(
        "--optimizer", choices=("SGD", "AdamW"), default=None, help="optimizer (default: solver.optimizer)"
    )
    p.add_argument(
        "--weight-decay", type=float, default=None, help="weight decay (default: solver.weight_decay)"
    )
    p.add_argument(
        "--steps",
        default=None,
        help="comma-separated iterations where the LR drops x solver.gamma; '' for none (default: solver.steps)",
    )
    p.add_argument(
        "--warmup-iters", type=int, default=None, help="warmup iterations (default: solver.warmup_iters)"
    )
    p.add_argument(
        "--warmup-factor",
        type=float,
        default=None,
        help="LR factor at iteration 0 (default: solver.warmup_factor)",
    )
    p.add_argument(
        "--checkpoint-period",
        type=int,
        default=None,
        help="iterations between checkpoints (default: solver.checkpoint_period)",
    )
    p.add_argument("--eval-period", type=int, default=0, help="iterations between evaluations (0: end only)")
    p.add_argument("--log-period", type=int, default=20, help="iterations between metric writes")
    p.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="data loader worker processes (default: dataloader.num_workers)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the Python, NumPy and torch RNGs")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stdout")
    p.set_defaults(func=_guarded(_train))

    p = subparsers.add_parser(
        "eval",
        help="evaluate weights (COCO AP)",
        formatter_class=fmt,
        description="Evaluate a model's weights with COCO AP; writes DIR/results.json. Classes are "
        "matched to the ground truth's categories by name (names from --classes or metadata.json next "
        "to the weights).",
    )
    _add_config_args(p)
    p.add_argument("--weights", required=True, help="checkpoint file (.pth, .pkl, .safetensors)")
    p.add_argument("--output-dir", required=True, metavar="DIR", help="where results.json goes")
    _add_data_args(p, "shapes_val")
    p.add_argument("--coco-json", default=None, metavar="FILE", help="COCO ground-truth json")
    p.add_argument("--image-root", default=None, metavar="DIR", help="images of --coco-json")
    p.add_argument("--classes", default=None, help="comma-separated class names of the model")
    p.set_defaults(func=_guarded(_eval))

    p = subparsers.add_parser(
        "predict",
        help="run a model on images and draw the results",
        formatter_class=fmt,
        description="Run a model on images (files or folders); writes DIR/<name>.png (visualisation) "
        "and DIR/<name>.json (boxes XYXY in pixels, scores, classes).",
    )
    p.add_argument("--config", required=True, metavar="FILE_OR_NAME", help="config YAML file or named config")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files or folders; arguments KEY=VALUE that are not existing paths are config overrides",
    )
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--weights", required=True, help="checkpoint file")
    p.add_argument("--output-dir", required=True, metavar="DIR", help="where outputs go")
    p.add_argument("--score-threshold", type=float, default=0.5, help="drop detections below this score")
    p.add_argument("--classes", default=None, help="comma-separated class names of the model")
    p.set_defaults(func=_guarded(_predict))

    p = subparsers.add_parser("config", help="show or list configs", formatter_class=fmt)
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = csub.add_parser("show", help="print the resolved YAML of a config", formatter_class=fmt)
    show.add_argument("config", metavar="NAME_OR_FILE", help="config YAML file or named config")
    show.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    show.set_defaults(func=_guarded(_config_show))
    lst = csub.add_parser("list", help="list the named configs", formatter_class=fmt)
    lst.set_defaults(func=_guarded(_config_list))
