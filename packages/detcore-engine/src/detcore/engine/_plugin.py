"""detcore-engine's own plugin: declares the component kinds this package owns and registers its built-ins."""

from detcore.plugins import hookimpl


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
