"""The typed model config: frozen dataclasses built from the components' own config classes, YAML files
with ``_base_`` inheritance, dotted overrides, and the named configs shipped with the package.

A config is a :class:`Config` with a ``model`` (:class:`ModelConfig`), an ``input`` (:class:`InputConfig`), a
``solver`` (:class:`SolverConfig`), a ``dataloader`` (:class:`DataLoaderConfig`) and ``datasets``
(:class:`DatasetsConfig`).
Each component of the model is a pair of fields, ``<part>_name`` (the name registered with
``detcore.plugins``) and ``<part>`` (that component's ``config_class`` instance), e.g. ``backbone_name:
resnet_fpn`` with ``backbone: ResNetFPNConfig(...)``. Component configs nest the same way (``RPNConfig.head_name``
/ ``head``). In YAML every dataclass is a mapping of its field names::

    _base_: Base-RCNN-FPN.yaml
    model:
      roi_heads:
        num_classes: 3

Defaults are detectron2's (``detectron2/config/defaults.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

import yaml

from detcore.backbones import ResNetConfig
from detcore.heads import DefaultAnchorGeneratorConfig, RPNConfig
from detcore.heads.dense import RetinaNetHeadConfig
from detcore.heads.dense.fcos_head import FCOSHeadConfig
from detcore.heads.roi_heads import Res5ROIHeadsConfig
from detcore.heads.sem_seg import SemSegFPNHeadConfig
from detcore.plugins import PluginError, get_component, get_plugin_manager

__all__ = [
    "AMPConfig",
    "ClipGradientsConfig",
    "Config",
    "DataLoaderConfig",
    "DatasetsConfig",
    "FCOSConfig",
    "InputConfig",
    "ModelConfig",
    "PanopticConfig",
    "RetinaNetConfig",
    "SolverConfig",
    "TestAugConfig",
    "TestConfig",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "get_config",
    "list_configs",
    "load_config",
]

#: Name of a "proposal_generator" meaning "proposals come with the inputs" (no module, no config).


@dataclass(frozen=True)
class InputConfig:
    """Input resizing (detectron2's ``INPUT.*``).

    Attributes:
        min_size_train: shortest-edge sizes for training (one is sampled per image).
        min_size_train_sampling: "choice" or "range".
        max_size_train: longest-edge limit in training.
        min_size_test: shortest-edge size at test time (0: no resize).
        max_size_test: longest-edge limit at test time.
        mask_format: "polygon" or "bitmask".
        random_flip: "horizontal", "vertical" or "none".
    """

    min_size_train: tuple[int, ...] = (800,)
    min_size_train_sampling: str = "choice"
    max_size_train: int = 1333
    min_size_test: int = 800
    max_size_test: int = 1333
    mask_format: str = "polygon"
    random_flip: str = "horizontal"

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_size_train", tuple(self.min_size_train))


@dataclass(frozen=True)
class TestAugConfig:
    """Test-time augmentation (detectron2's ``TEST.AUG.*``), read by ``DatasetMapperTTA.from_config``.

    Attributes:
        enabled: run inference with test-time augmentation (``GeneralizedRCNNWithTTA``).
        min_sizes: shortest-edge sizes; every one gives an augmented input.
        max_size: longest-edge limit of the resized inputs.
        flip: also add the horizontally flipped version of every resized input.
    """

    __test__ = False  # a config, not a pytest test class (its name starts with "Test")

    enabled: bool = False
    min_sizes: tuple[int, ...] = (400, 500, 600, 700, 800, 900, 1000, 1100, 1200)
    max_size: int = 4000
    flip: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_sizes", tuple(self.min_sizes))


@dataclass(frozen=True)
class TestConfig:
    """Evaluation-time settings (detectron2's ``TEST.*``); ``aug``: :class:`TestAugConfig`."""

    __test__ = False

    aug: TestAugConfig = field(default_factory=TestAugConfig)


@dataclass(frozen=True)
class ClipGradientsConfig:
    """Gradient clipping (detectron2's ``SOLVER.CLIP_GRADIENTS.*``).

    Attributes:
        enabled: clip the gradients before every optimizer step.
        clip_type: "value" (clamp each element to ``[-clip_value, clip_value]``), "norm" (the norm of each
            parameter group) or "full_model" (the norm of all gradients together).
        clip_value: the threshold (> 0).
        norm_type: p of the p-norm for "norm" / "full_model" (``inf`` allowed).
    """

    enabled: bool = False
    clip_type: str = "value"
    clip_value: float = 1.0
    norm_type: float = 2.0

    def __post_init__(self) -> None:
        if self.clip_type not in ("value", "norm", "full_model"):
            raise ValueError(f"clip_type must be 'value', 'norm' or 'full_model', got {self.clip_type!r}")
        if not self.clip_value > 0:
            raise ValueError(f"clip_value must be > 0, got {self.clip_value}")


@dataclass(frozen=True)
class AMPConfig:
    """Automatic mixed precision (detectron2's ``SOLVER.AMP.*``; ``precision`` is detcore's).

    Attributes:
        enabled: train under ``torch.autocast`` (detcore's ``AMPTrainer``).
        precision: "fp16" (detectron2's AMP; CUDA only, with a gradient scaler) or "bf16" (CPU or CUDA).
    """

    enabled: bool = False
    precision: str = "fp16"

    def __post_init__(self) -> None:
        if self.precision not in ("fp16", "bf16"):
            raise ValueError(f"precision must be 'fp16' or 'bf16', got {self.precision!r}")


#: detectron2's learning-rate schedules that detcore implements (``SOLVER.LR_SCHEDULER_NAME``).
_LR_SCHEDULERS = ("WarmupMultiStepLR", "WarmupCosineLR")


@dataclass(frozen=True)
class SolverConfig:
    """Optimizer and schedule (detectron2's ``SOLVER.*``, names in snake_case; defaults are detectron2's
    ``config/defaults.py``, the named configs carry the model zoo's values).

    Attributes:
        optimizer: "SGD" (detectron2's) or "AdamW" (detcore's choice; betas (0.9, 0.999), ``momentum`` and
            ``nesterov`` unused).
        ims_per_batch: images per iteration over all processes.
        base_lr: learning rate after warm-up, before decays.
        base_lr_end: the cosine schedule's final learning rate.
        momentum / nesterov: SGD momentum.
        weight_decay: L2 weight decay of the parameters.
        weight_decay_norm: weight decay of normalization layers' parameters.
        weight_decay_bias: weight decay of biases (None: ``weight_decay``; norm biases keep
            ``weight_decay_norm``).
        bias_lr_factor: learning rate of biases relative to ``base_lr``.
        lr_scheduler_name: "WarmupMultiStepLR" or "WarmupCosineLR".
        gamma / steps: the multi-step schedule multiplies the learning rate by ``gamma`` at each of ``steps``
            (iterations, increasing; those past ``max_iter`` are ignored).
        max_iter: training iterations.
        warmup_factor / warmup_iters / warmup_method: warm-up from ``warmup_factor * base_lr`` over
            ``warmup_iters`` iterations, "linear" or "constant".
        checkpoint_period: iterations between checkpoints.
        clip_gradients: gradient clipping.
        amp: mixed precision.
        channels_last: train with the model in ``torch.channels_last`` memory format (detcore's; same math,
            faster oneDNN convolutions on CPU).
    """

    optimizer: str = "SGD"
    ims_per_batch: int = 16
    base_lr: float = 0.001
    base_lr_end: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0
    weight_decay_bias: float | None = None
    bias_lr_factor: float = 1.0
    lr_scheduler_name: str = "WarmupMultiStepLR"
    gamma: float = 0.1
    steps: tuple[int, ...] = (30000,)
    max_iter: int = 40000
    warmup_factor: float = 0.001
    warmup_iters: int = 1000
    warmup_method: str = "linear"
    checkpoint_period: int = 5000
    clip_gradients: ClipGradientsConfig = field(default_factory=ClipGradientsConfig)
    amp: AMPConfig = field(default_factory=AMPConfig)
    channels_last: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if self.optimizer not in ("SGD", "AdamW"):
            raise ValueError(f"optimizer must be 'SGD' or 'AdamW', got {self.optimizer!r}")
        if self.lr_scheduler_name not in _LR_SCHEDULERS:
            raise ValueError(
                f"lr_scheduler_name must be one of {', '.join(_LR_SCHEDULERS)}, got {self.lr_scheduler_name!r}"
            )
        if self.warmup_method not in ("linear", "constant"):
            raise ValueError(f"warmup_method must be 'linear' or 'constant', got {self.warmup_method!r}")
        for name in ("ims_per_batch", "max_iter", "checkpoint_period"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.warmup_iters < 0:
            raise ValueError(f"warmup_iters must be >= 0, got {self.warmup_iters}")
        if not self.base_lr > 0:
            raise ValueError(f"base_lr must be > 0, got {self.base_lr}")
        if list(self.steps) != sorted(self.steps) or any(s < 0 for s in self.steps):
            raise ValueError(f"steps must be increasing iterations >= 0, got {list(self.steps)}")


@dataclass(frozen=True)
class DataLoaderConfig:
    """The training data loader (detectron2's ``DATALOADER.*``).

    Attributes:
        num_workers: loader worker processes.
        aspect_ratio_grouping: batch images of like orientation (landscape / portrait) together.
        filter_empty_annotations: drop training images without (non-crowd) annotations.
        sampler_train: "TrainingSampler" or "RepeatFactorTrainingSampler".
        repeat_threshold: the repeat-factor sampler's frequency threshold (LVIS-style category balancing).
    """

    num_workers: int = 4
    aspect_ratio_grouping: bool = True
    filter_empty_annotations: bool = True
    sampler_train: str = "TrainingSampler"
    repeat_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.sampler_train not in ("TrainingSampler", "RepeatFactorTrainingSampler"):
            raise ValueError(
                "sampler_train must be 'TrainingSampler' or 'RepeatFactorTrainingSampler', got "
                f"{self.sampler_train!r}"
            )


@dataclass(frozen=True)
class DatasetsConfig:
    """Dataset names (detectron2's ``DATASETS.TRAIN`` / ``DATASETS.TEST``), as registered with the dataset
    catalog.

    Attributes:
        train: datasets concatenated for training.
        test: datasets evaluated.
    """

    train: tuple[str, ...] = ()
    test: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", tuple(self.train))
        object.__setattr__(self, "test", tuple(self.test))


@dataclass(frozen=True)
class RetinaNetConfig:
    """The RetinaNet meta-architecture's settings (detectron2's ``MODEL.RETINANET.*`` defaults; its anchors
    here, detectron2's ``MODEL.ANCHOR_GENERATOR``).

    Attributes:
        num_classes: foreground classes (overrides the head config's ``num_classes``).
        in_features: feature maps the head runs on.
        head_name / head: the "dense_head" component and its config.
        anchor_generator_name / anchor_generator: the "anchor_generator" component and its config.
        iou_thresholds / iou_labels: anchor Matcher (with low-quality matches).
        focal_loss_alpha / focal_loss_gamma: sigmoid focal loss.
        smooth_l1_beta / bbox_reg_loss_type / bbox_reg_weights: box regression (``SMOOTH_L1_LOSS_BETA``, ...).
        test_score_thresh / test_topk_candidates / test_nms_thresh: inference (``*_TEST``).
        max_detections_per_image: ``TEST.DETECTIONS_PER_IMAGE``.
    """

    num_classes: int = 80
    in_features: tuple[str, ...] = ("p3", "p4", "p5", "p6", "p7")
    head_name: str = "RetinaNetHead"
    head: Any = field(default_factory=RetinaNetHeadConfig)
    anchor_generator_name: str = "DefaultAnchorGenerator"
    anchor_generator: Any = field(default_factory=DefaultAnchorGeneratorConfig)
    iou_thresholds: tuple[float, ...] = (0.4, 0.5)
    iou_labels: tuple[int, ...] = (0, -1, 1)
    focal_loss_alpha: float = 0.25
    focal_loss_gamma: float = 2.0
    smooth_l1_beta: float = 0.1
    bbox_reg_loss_type: str = "smooth_l1"
    bbox_reg_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    test_score_thresh: float = 0.05
    test_topk_candidates: int = 1000
    test_nms_thresh: float = 0.5
    max_detections_per_image: int = 100

    def __post_init__(self) -> None:
        for name in ("in_features", "iou_thresholds", "iou_labels", "bbox_reg_weights"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


@dataclass(frozen=True)
class FCOSConfig:
    """The FCOS meta-architecture's settings (detectron2's ``configs/common/models/fcos.py``).

    Attributes:
        num_classes: foreground classes (overrides the head config's ``num_classes``).
        in_features: feature maps the head runs on (one point "anchor" per position).
        head_name / head: the "dense_head" component and its config.
        center_sampling_radius: positives lie within this many strides of a box centre.
        focal_loss_alpha / focal_loss_gamma: sigmoid focal loss.
        test_score_thresh / test_topk_candidates / test_nms_thresh / max_detections_per_image: inference.
    """

    num_classes: int = 80
    in_features: tuple[str, ...] = ("p3", "p4", "p5", "p6", "p7")
    head_name: str = "FCOSHead"
    head: Any = field(default_factory=FCOSHeadConfig)
    center_sampling_radius: float = 1.5
    focal_loss_alpha: float = 0.25
    focal_loss_gamma: float = 2.0
    test_score_thresh: float = 0.2
    test_topk_candidates: int = 1000
    test_nms_thresh: float = 0.6
    max_detections_per_image: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "in_features", tuple(self.in_features))


@dataclass(frozen=True)
class PanopticConfig:
    """The PanopticFPN combination of instance and semantic outputs (detectron2's
    ``MODEL.PANOPTIC_FPN.COMBINE.*``).

    Attributes:
        combine_overlap_thresh: an instance is dropped when more than this fraction of its mask is taken.
        combine_stuff_area_thresh: stuff regions smaller than this (pixels) are dropped.
        combine_instances_score_thresh: instances scoring below this are dropped.
    """

    combine_overlap_thresh: float = 0.5
    combine_stuff_area_thresh: float = 4096.0
    combine_instances_score_thresh: float = 0.5


@dataclass(frozen=True)
class ModelConfig:
    """The model (detectron2's ``MODEL.*``); each component is a registered name plus its config.

    Attributes:
        meta_architecture: registered "meta_arch" name ("GeneralizedRCNN", "ProposalNetwork", "RetinaNet",
            "FCOS", "SemanticSegmentor", "PanopticFPN").
        backbone_name / backbone: "backbone" component and its config (default: detectron2's C4 ResNet-50).
        proposal_generator_name / proposal_generator: "proposal_generator" component ("PrecomputedProposals":
            none, proposals come with the inputs; its config is then None).
        roi_heads_name / roi_heads: "roi_heads" component and its config (unused by ProposalNetwork).
        retinanet: settings of the RetinaNet meta-architecture (unused by the others).
        fcos: settings of the FCOS meta-architecture (unused by the others).
        sem_seg_head_name / sem_seg_head: "sem_seg_head" component and its config (SemanticSegmentor and
            PanopticFPN only).
        panoptic: PanopticFPN's combination thresholds (unused by the others).
        pixel_mean / pixel_std: per-channel normalisation of the input image.
        input_format: channel order of the input images, "BGR" or "RGB".
        vis_period: training visualisation period (0: off; kept for detectron2 compatibility).
        weights: checkpoint to load after building (informational; :func:`build_model` does not load it).
    """

    meta_architecture: str = "GeneralizedRCNN"
    backbone_name: str = "resnet"
    backbone: Any = field(default_factory=ResNetConfig)
    proposal_generator_name: str = "RPN"
    proposal_generator: Any = field(default_factory=RPNConfig)
    roi_heads_name: str = "Res5ROIHeads"
    roi_heads: Any = field(default_factory=Res5ROIHeadsConfig)
    retinanet: RetinaNetConfig = field(default_factory=RetinaNetConfig)
    fcos: FCOSConfig = field(default_factory=FCOSConfig)
    sem_seg_head_name: str = "SemSegFPNHead"
    sem_seg_head: Any = field(default_factory=SemSegFPNHeadConfig)
    panoptic: PanopticConfig = field(default_factory=PanopticConfig)
    pixel_mean: tuple[float, ...] = (103.53, 116.28, 123.675)
    pixel_std: tuple[float, ...] = (1.0, 1.0, 1.0)
    input_format: str = "BGR"
    vis_period: int = 0
    weights: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "pixel_mean", tuple(float(v) for v in self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(float(v) for v in self.pixel_std))
        if self.input_format not in ("BGR", "RGB"):
            raise ValueError(f"input_format must be 'BGR' or 'RGB', got {self.input_format!r}")
        if len(self.pixel_mean) != len(self.pixel_std):
            raise ValueError(
                f"pixel_mean and pixel_std must have the same length, got {len(self.pixel_mean)} and "
                f"{len(self.pixel_std)}"
            )


@dataclass(frozen=True)
class Config:
    """A full config: the model, the input resizing, the solver, the training data loader, the datasets and the
    test-time settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    dataloader: DataLoaderConfig = field(default_factory=DataLoaderConfig)
    datasets: DatasetsConfig = field(default_factory=DatasetsConfig)
    test: TestConfig = field(default_factory=TestConfig)


# ----------------------------------------------------------------------------------------------------------
# component config classes from the registry


def _declared_kinds() -> set[str]:
    return set(get_plugin_manager().registry.declared_kinds())


def config_class_of(kind: str, name: str) -> type | None:
    """The config dataclass of component ``name`` of ``kind``: its ``config_class``, else the annotated type of
    a factory's first parameter; None for a component that declares ``config_class = None`` (it takes no
    configuration, e.g. "PrecomputedProposals")."""
    target = get_component(kind, name)
    if "config_class" in vars(target) and target.config_class is None:
        return None
    cls = getattr(target, "config_class", None)
    if cls is None and callable(target):
        try:
            hints = typing.get_type_hints(target)
        except Exception:  # unresolvable annotations: no config class
            hints = {}
        params = [p for p in inspect.signature(target).parameters.values() if p.name != "self"]
        if params and params[0].name in hints:
            cls = _strip_optional(hints[params[0].name])
    if cls is None or not dataclasses.is_dataclass(cls):
        raise ValueError(
            f"{kind} {name!r} has no config dataclass (no config_class, no annotated cfg argument)"
        )
    return cls


@functools.cache
def _kind_of_config_class(cls: type) -> str | None:
    for entry in get_plugin_manager().registry.entries():
        try:
            target = entry.load()
        except Exception:  # a broken plugin must not break unrelated configs
            continue
        if getattr(target, "config_class", None) is cls:
            return entry.kind
    return None


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


# ----------------------------------------------------------------------------------------------------------
# dict -> typed dataclasses


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    """``value`` (parsed YAML) converted to the type hint ``tp``; ValueError naming ``path`` if it is not."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, path)
            except ValueError:
                pass
        raise ValueError(f"{path}: expected {tp}, got {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path}: expected a bool, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path}: expected an int, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path}: expected a float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{path}: expected a str, got {type(value).__name__} {value!r}")
        return value
    if tp in (tuple, list) or origin in (tuple, list):
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            raise ValueError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        container = origin or tp
        args = typing.get_args(tp)
        if not args:  # bare tuple/list: numbers or lists of numbers (e.g. anchor sizes)
            return container(_nested_numbers(v, f"{path}[{i}]") for i, v in enumerate(value))
        if container is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ValueError(f"{path}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        return container(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, path)
    return value


def _nested_numbers(value: Any, path: str) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_nested_numbers(v, f"{path}[{i}]") for i, v in enumerate(value))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"{path}: expected a number or a list of numbers, got {type(value).__name__} {value!r}"
        )
    return value


def _component_class(owner: type, fname: str, name: str | None, default: Any, path: str) -> type | None:
    """Config class of the Any-typed field ``fname`` of ``owner``: from the sibling ``<fname>_name`` through the
    registry, else the type of the default value."""
    if name is not None:
        kinds = _declared_kinds()
        kind = fname if fname in kinds else None
        if kind is None and dataclasses.is_dataclass(default):
            kind = _kind_of_config_class(type(default))
        if kind is not None:
            try:
                return config_class_of(kind, name)
            except PluginError as e:
                raise ValueError(f"{path}_name: {e}") from e
    if dataclasses.is_dataclass(default):
        return type(default)
    return None


def _from_dict(cls: type, data: Any, path: str) -> Any:
    if dataclasses.is_dataclass(data) and isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{path or 'config'}: expected a mapping for {cls.__name__}, got {type(data).__name__}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ValueError(
            f"unknown config key {key!r} (in {cls.__name__}); valid keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for fname, f in fields.items():
        sub = f"{path}.{fname}" if path else fname
        tp = hints.get(fname, Any)
        if tp is Any and (fname in data or f"{fname}_name" in data):
            name_key = f"{fname}_name"
            name = None
            if name_key in fields:
                name = data.get(name_key, _field_default(fields[name_key]))
                if not isinstance(name, str):
                    raise ValueError(f"{sub}_name: expected a str, got {type(name).__name__} {name!r}")
            default = _field_default(f)
            comp_cls = _component_class(cls, fname, name, default, sub)
            if comp_cls is None:
                value = data.get(fname)
                if value not in (None, {}):
                    raise ValueError(f"{sub}: component {name!r} takes no config, got {value!r}")
                kwargs[fname] = None
                continue
            kwargs[fname] = _from_dict(comp_cls, data.get(fname), sub)
        elif fname in data:
            kwargs[fname] = _convert(data[fname], tp, sub)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path or 'config'}: invalid {cls.__name__}: {e}") from e


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """A :class:`Config` from a (parsed YAML) mapping; missing keys take their defaults.

    Raises:
        ValueError: an unknown key (naming its full path and the valid keys) or a value of the wrong type.
    """
    data = dict(data)
    data.pop("_base_", None)
    return _from_dict(Config, data, "")


# ----------------------------------------------------------------------------------------------------------
# typed dataclasses -> dict / YAML


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A config (or any config dataclass) as nested dicts and lists of plain values."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"cfg must be a config dataclass, got {type(cfg).__name__}")
    return _to_plain(cfg)


def dump_config(cfg: Config) -> str:
    """The config as YAML text; :func:`load_config` of it gives an equal config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


# ----------------------------------------------------------------------------------------------------------
# YAML files, inheritance, overrides


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` merged into ``base`` key by key. Where ``update`` switches a component (``<part>_name`` to
    another name), the base's ``<part>`` settings belonged to the old component and are dropped."""
    out = dict(base)
    for k, v in update.items():
        if k.endswith("_name") and isinstance(v, str) and out.get(k, v) != v:
            out.pop(k[: -len("_name")], None)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ValueError(f"_base_ cycle: {' -> '.join(str(p) for p in (*seen, path))}")
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} not found")
    data = yaml.safe_load(path.read_text())
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a config file must hold a mapping, got {type(data).__name__}")
    data = dict(data)
    base = data.pop("_base_", None)
    if base is None:
        return data
    bases = [base] if isinstance(base, str) else base
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ValueError(f"{path}: _base_ must be a file name or a list of them, got {base!r}")
    merged: dict[str, Any] = {}
    for b in bases:
        merged = _merge(merged, _read_yaml(path.parent / b, (*seen, path)))
    return _merge(merged, data)


def _apply_override(data: dict[str, Any], override: str) -> dict[str, Any]:
    if not isinstance(override, str) or "=" not in override:
        raise ValueError(f"override must be 'dotted.key=value', got {override!r}")
    key, _, text = override.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ValueError(
            f"override key must be a dotted path like 'model.roi_heads.num_classes', got {key!r}"
        )
    value = yaml.safe_load(text) if text.strip() else ""
    nested: Any = value
    for p in reversed(parts):
        nested = {p: nested}
    return _merge(data, nested)


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Load a detcore YAML config.

    Args:
        path: the YAML file; its ``_base_`` (a file name or list, relative to the file) is loaded first and
            merged key by key (the file's values win).
        overrides: ``"dotted.key=value"`` strings applied in order, values parsed with ``yaml.safe_load``
            (``model.roi_heads.num_classes=3``, ``input.min_size_train=[640, 672]``).

    Returns:
        Config: the typed config.

    Raises:
        ValueError: unknown keys, wrong types, malformed overrides, ``_base_`` cycles.
        FileNotFoundError: a missing file.
    """
    if isinstance(overrides, str):
        raise TypeError("overrides must be a list of 'key=value' strings, got a single str")
    data = _read_yaml(Path(path))
    for o in overrides:
        data = _apply_override(data, o)
    return config_from_dict(data)


def _configs_dir() -> Any:
    return resources.files("detcore.archs") / "configs"


def list_configs() -> list[str]:
    """Names of the configs shipped with detcore.archs (usable with :func:`get_config`)."""
    return sorted(
        p.name[: -len(".yaml")]
        for p in _configs_dir().iterdir()
        if p.name.endswith(".yaml") and not p.name.startswith("Base-")
    )


def get_config(name: str, overrides: Iterable[str] = ()) -> Config:
    """A named config shipped with detcore.archs, e.g. "mask_rcnn_R_50_FPN" (= its ``_1x``),
    "faster_rcnn_R_50_FPN_3x", "rpn_R_50_FPN"; see :func:`list_configs`."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    names = list_configs()
    if name not in names:
        raise ValueError(f"no config named {name!r}; available: {', '.join(names)}")
    with resources.as_file(_configs_dir() / f"{name}.yaml") as p:
        return load_config(p, overrides)
