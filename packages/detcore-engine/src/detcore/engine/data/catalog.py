"""Dataset and metadata catalogs (detectron2's ``DatasetCatalog`` / ``MetadataCatalog``).

A dataset is a name bound to a loader: a zero-argument callable returning a list of detectron2-format
dataset dicts (``file_name, height, width, image_id, annotations=[{bbox, bbox_mode, category_id,
segmentation, keypoints, iscrowd}]``). Names not registered in this process are looked up among the
plugin components of kind ``"dataset"``: such a component is a factory returning ``(loader, metadata)``
(metadata a dict). Nothing is looked up at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = [
    "DatasetCatalog",
    "Metadata",
    "MetadataCatalog",
    "get_detection_dataset_dicts",
    "register_coco_instances",
]

logger = logging.getLogger(__name__)


class Metadata:
    """Attributes of a dataset (``thing_classes``, ``stuff_classes``, ``keypoint_names``,
    ``keypoint_flip_map``, ``evaluator_type``, ``json_file``, ``image_root``,
    ``thing_dataset_id_to_contiguous_id``, ...). An attribute, once set, may only be set again to an equal
    value (as in detectron2), so that two sources cannot silently disagree."""

    def __init__(self, name: str = "", **kwargs: Any):
        object.__setattr__(self, "name", name)
        self.set(**kwargs)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        raise AttributeError(
            f"metadata of dataset {self.name!r} has no attribute {key!r}; available: {sorted(self.as_dict())}"
        )

    def __setattr__(self, key: str, value: Any) -> None:
        if key in self.__dict__ and key != "name":
            old = self.__dict__[key]
            if old != value:
                raise ValueError(
                    f"metadata {key!r} of dataset {self.name!r} is already {old!r}; cannot change it to {value!r}"
                )
        object.__setattr__(self, key, value)

    def set(self, **kwargs: Any) -> Metadata:
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"Metadata({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


def _plugin_factory(name: str) -> Callable[[], Any] | None:
    from detcore.plugins import get_plugin_manager

    manager = get_plugin_manager()
    if name not in manager.names("dataset"):
        return None
    return manager.get("dataset", name)


class _DatasetCatalog:
    """name -> loader. Use the module-level instance :data:`DatasetCatalog`."""

    def __init__(self) -> None:
        self._loaders: dict[str, Callable[[], list[dict]]] = {}

    def register(self, name: str, func: Callable[[], list[dict]]) -> None:
        """Bind ``name`` to ``func`` (a zero-argument callable returning a list of dataset dicts)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"DatasetCatalog.register: name must be a non-empty str, got {name!r}")
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register: func must be callable, got {type(func).__name__}")
        if name in self._loaders:
            raise ValueError(f"DatasetCatalog.register: dataset {name!r} is already registered")
        self._loaders[name] = func

    def _ensure(self, name: str) -> bool:
        if name in self._loaders:
            return True
        factory = _plugin_factory(name)
        if factory is None:
            return False
        result = factory()
        if not (isinstance(result, tuple) and len(result) == 2 and callable(result[0])):
            raise TypeError(
                f"dataset plugin {name!r} must return (loader, metadata dict), got {type(result).__name__}"
            )
        loader, metadata = result
        self._loaders[name] = loader
        MetadataCatalog.get(name).set(**dict(metadata or {}))
        return True

    def get(self, name: str) -> list[dict]:
        """Call the loader of ``name`` and return its dataset dicts."""
        if not self._ensure(name):
            raise KeyError(
                f"dataset {name!r} is not registered; registered: {', '.join(self.list()) or '(none)'}"
            )
        dicts = self._loaders[name]()
        if not isinstance(dicts, list):
            raise TypeError(
                f"the loader of dataset {name!r} must return a list of dicts, got {type(dicts).__name__}"
            )
        return dicts

    def list(self) -> list[str]:
        """Registered names, plugin datasets included."""
        from detcore.plugins import get_plugin_manager

        return sorted(set(self._loaders) | set(get_plugin_manager().names("dataset")))

    def __contains__(self, name: str) -> bool:
        return name in self._loaders or _plugin_factory(name) is not None

    def remove(self, name: str) -> None:
        self._loaders.pop(name)

    def clear(self) -> None:
        self._loaders.clear()


class _MetadataCatalog:
    """name -> :class:`Metadata` (created on first access). Use the instance :data:`MetadataCatalog`."""

    def __init__(self) -> None:
        self._meta: dict[str, Metadata] = {}

    def get(self, name: str) -> Metadata:
        if name not in self._meta:
            self._meta[name] = Metadata(name=name)
            if name not in DatasetCatalog._loaders and _plugin_factory(name) is not None:
                DatasetCatalog._ensure(name)
        return self._meta[name]

    def list(self) -> list[str]:
        return sorted(self._meta)

    def remove(self, name: str) -> None:
        self._meta.pop(name, None)

    def clear(self) -> None:
        self._meta.clear()


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()


def register_coco_instances(name: str, metadata: dict, json_file: str, image_root: str) -> None:
    """Register a COCO-format instances/keypoints json as dataset ``name`` (loaded lazily with
    :func:`~detcore.engine.data.coco.load_coco_json`) and set its metadata (``json_file``, ``image_root``,
    ``evaluator_type="coco"`` plus ``metadata``)."""
    import os

    from detcore.engine.data.coco import load_coco_json

    if not isinstance(metadata, dict):
        raise TypeError(f"register_coco_instances: metadata must be a dict, got {type(metadata).__name__}")
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        **{"evaluator_type": "coco", **metadata, "json_file": json_file, "image_root": image_root}
    )


def get_detection_dataset_dicts(
    names: str | list[str], filter_empty: bool = True, min_keypoints: int = 0
) -> list[dict]:
    """Concatenate the dicts of one or more datasets; optionally drop images without (non-crowd)
    annotations and images with fewer than ``min_keypoints`` visible keypoints."""
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError("get_detection_dataset_dicts: names must name at least one dataset")
    dicts = [d for name in names for d in DatasetCatalog.get(name)]
    has_instances = any("annotations" in d for d in dicts)
    if filter_empty and has_instances:
        before = len(dicts)
        dicts = [d for d in dicts if any(a.get("iscrowd", 0) == 0 for a in d.get("annotations", []))]
        logger.info("removed %d images without usable annotations; %d left", before - len(dicts), len(dicts))
    if min_keypoints > 0 and has_instances:

        def visible(d: dict) -> int:
            return sum(
                sum(1 for v in a.get("keypoints", [])[2::3] if v > 0) for a in d.get("annotations", [])
            )

        dicts = [d for d in dicts if visible(d) >= min_keypoints]
    if not dicts:
        raise ValueError(f"get_detection_dataset_dicts: no images left in {names} after filtering")
    return dicts
