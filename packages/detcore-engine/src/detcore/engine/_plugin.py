"""detcore-engine's own plugin: declares the component kinds this package owns and registers its built-ins."""

from detcore.plugins import hookimpl

_AUGMENTATIONS = (
    "RandomBrightness",
    "RandomContrast",
    "RandomCrop",
    "RandomCrop_CategoryAreaConstraint",
    "RandomFlip",
    "RandomRotation",
    "RandomSaturation",
    "ResizeShortestEdge",
)


@hookimpl
def detcore_register_components(registry):
    registry.declare_kind("dataset", "dataset loaders: name -> list of detectron2-format dataset dicts")
    registry.declare_kind("evaluator", "dataset evaluators")
    registry.declare_kind("augmentation", "data augmentations")
    registry.declare_kind("trainer_hook", "trainer hooks")
    registry.add("evaluator", "COCOEvaluator", "detcore.engine.evaluation.coco_evaluation:COCOEvaluator")
    registry.add(
        "evaluator", "SemSegEvaluator", "detcore.engine.evaluation.sem_seg_evaluation:SemSegEvaluator"
    )
    # datasets: factories returning (loader, metadata dict)
    registry.add("dataset", "shapes_train", "detcore.engine.data.shapes:shapes_train_factory")
    registry.add("dataset", "shapes_val", "detcore.engine.data.shapes:shapes_val_factory")
    for name in _AUGMENTATIONS:
        registry.add("augmentation", name, f"detcore.engine.data.transforms.augmentation:{name}")
    for name in _TRAINER_HOOKS:
        registry.add("trainer_hook", name, f"detcore.engine.train.hooks:{name}")


_TRAINER_HOOKS = ("EvalHook", "IterationTimer", "LRScheduler", "PeriodicCheckpointer", "PeriodicWriter")


@hookimpl
def detcore_add_cli_commands(subparsers):
    from detcore.engine.cli import add_commands

    add_commands(subparsers)
