"""Dataset evaluators: COCO box/mask/keypoint AP, semantic segmentation, and the inference loop."""

from detcore.engine.evaluation.coco_evaluation import (
    COCOEvaluator,
    category_mapping_by_name,
    evaluate_predictions_on_coco,
    instances_to_coco_json,
    load_coco_gt,
)
from detcore.engine.evaluation.evaluator import (
    DatasetEvaluator,
    DatasetEvaluators,
    format_results_table,
    inference_context,
    inference_on_dataset,
    print_csv_format,
)
from detcore.engine.evaluation.sem_seg_evaluation import SemSegEvaluator, load_sem_seg_gt

__all__ = [
    "COCOEvaluator",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "SemSegEvaluator",
    "category_mapping_by_name",
    "evaluate_predictions_on_coco",
    "format_results_table",
    "inference_context",
    "inference_on_dataset",
    "instances_to_coco_json",
    "load_coco_gt",
    "load_sem_seg_gt",
    "print_csv_format",
]
