"""detcore.structures: Boxes, RotatedBoxes, BoxMode, Instances, ImageList, masks and keypoints
(the behaviour of ``detectron2.structures``)."""

from detcore.structures.boxes import (
    Boxes,
    BoxMode,
    matched_pairwise_iou,
    pairwise_intersection,
    pairwise_ioa,
    pairwise_iou,
    pairwise_point_box_distance,
)
from detcore.structures.image_list import ImageList
from detcore.structures.instances import Instances
from detcore.structures.keypoints import Keypoints, heatmaps_to_keypoints, keypoints_to_heatmap
from detcore.structures.masks import (
    BitMasks,
    PolygonMasks,
    ROIMasks,
    polygon_area,
    polygons_to_bitmask,
    rasterize_polygons_within_box,
)
from detcore.structures.rotated_boxes import RotatedBoxes, pairwise_iou_rotated

__all__ = [
    "BitMasks",
    "BoxMode",
    "Boxes",
    "ImageList",
    "Instances",
    "Keypoints",
    "PolygonMasks",
    "ROIMasks",
    "RotatedBoxes",
    "heatmaps_to_keypoints",
    "keypoints_to_heatmap",
    "matched_pairwise_iou",
    "pairwise_intersection",
    "pairwise_ioa",
    "pairwise_iou",
    "pairwise_iou_rotated",
    "pairwise_point_box_distance",
    "polygon_area",
    "polygons_to_bitmask",
    "rasterize_polygons_within_box",
]
