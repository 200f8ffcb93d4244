"""Transforms (deterministic) and augmentations (random, producing transforms), as in
``detectron2.data.transforms``."""

from detcore.engine.data.transforms.augmentation import (
    AugInput,
    Augmentation,
    AugmentationList,
    RandomBrightness,
    RandomContrast,
    RandomCrop,
    RandomCrop_CategoryAreaConstraint,
    RandomFlip,
    RandomRotation,
    RandomSaturation,
    ResizeShortestEdge,
    apply_augmentations,
)
from detcore.engine.data.transforms.transform import (
    BlendTransform,
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    ResizeTransform,
    RotationTransform,
    Transform,
    TransformList,
    VFlipTransform,
)

__all__ = [
    "AugInput",
    "Augmentation",
    "AugmentationList",
    "BlendTransform",
    "CropTransform",
    "HFlipTransform",
    "NoOpTransform",
    "RandomBrightness",
    "RandomContrast",
    "RandomCrop",
    "RandomCrop_CategoryAreaConstraint",
    "RandomFlip",
    "RandomRotation",
    "RandomSaturation",
    "ResizeShortestEdge",
    "ResizeTransform",
    "RotationTransform",
    "Transform",
    "TransformList",
    "VFlipTransform",
    "apply_augmentations",
]
