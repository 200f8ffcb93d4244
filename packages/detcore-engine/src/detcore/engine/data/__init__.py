"""detcore.engine.data: dataset catalog, COCO loaders, the synthetic shapes dataset, augmentations,
the dataset mapper, samplers and data loaders (the behaviour of ``detectron2.data``)."""

from detcore.engine.data import transforms
from detcore.engine.data.build import (
    AspectRatioGroupedDataset,
    DatasetFromList,
    MapDataset,
    ToIterableDataset,
    build_batch_data_loader,
    build_detection_test_loader,
    build_detection_train_loader,
    trivial_batch_collator,
)
from detcore.engine.data.catalog import (
    DatasetCatalog,
    Metadata,
    MetadataCatalog,
    get_detection_dataset_dicts,
    register_coco_instances,
)
from detcore.engine.data.coco import load_coco_json, load_coco_panoptic_json
from detcore.engine.data.detection_utils import (
    annotations_to_instances,
    create_keypoint_hflip_indices,
    filter_empty_instances,
    read_image,
    transform_instance_annotations,
)
from detcore.engine.data.mapper import DatasetMapper
from detcore.engine.data.samplers import (
    InferenceSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
    repeat_factors_from_category_frequency,
)
from detcore.engine.data.shapes import make_shapes_dataset

__all__ = [
    "AspectRatioGroupedDataset",
    "DatasetCatalog",
    "DatasetFromList",
    "DatasetMapper",
    "InferenceSampler",
    "MapDataset",
    "Metadata",
    "MetadataCatalog",
    "RepeatFactorTrainingSampler",
    "ToIterableDataset",
    "TrainingSampler",
    "annotations_to_instances",
    "build_batch_data_loader",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "create_keypoint_hflip_indices",
    "filter_empty_instances",
    "get_detection_dataset_dicts",
    "load_coco_json",
    "load_coco_panoptic_json",
    "make_shapes_dataset",
    "read_image",
    "register_coco_instances",
    "repeat_factors_from_category_frequency",
    "transform_instance_annotations",
    "transforms",
    "trivial_batch_collator",
]
