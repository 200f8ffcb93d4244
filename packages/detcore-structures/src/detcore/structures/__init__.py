"""detcore.structures: Boxes, RotatedBoxes, BoxMode, Instances, ImageList, masks and keypoints (detectron2.structures)."""

__all__: list[str] = []
