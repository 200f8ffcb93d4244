"""Training: optimizer and LR schedule builders, trainers, hooks and metric writers."""

from detcore.engine.train.events import EventStorage, HistoryBuffer, get_event_storage
from detcore.engine.train.hooks import (
    CommonMetricPrinter,
    EvalHook,
    EventWriter,
    IterationTimer,
    JSONWriter,
    LRScheduler,
    PeriodicCheckpointer,
    PeriodicWriter,
    TensorboardXWriter,
)
from detcore.engine.train.lr_scheduler import LRMultiplier, WarmupMultiplier, build_lr_scheduler
from detcore.engine.train.optimizer import (
    GradientClipConfig,
    build_optimizer,
    build_optimizer_from_config,
    clip_gradients,
    get_default_optimizer_params,
    maybe_add_gradient_clipping,
)
from detcore.engine.train.trainer import AMPTrainer, HookBase, SimpleTrainer, TrainerBase, create_ddp_model

__all__ = [
    "AMPTrainer",
    "CommonMetricPrinter",
    "EvalHook",
    "EventStorage",
    "EventWriter",
    "GradientClipConfig",
    "HistoryBuffer",
    "HookBase",
    "IterationTimer",
    "JSONWriter",
    "LRMultiplier",
    "LRScheduler",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "SimpleTrainer",
    "TensorboardXWriter",
    "TrainerBase",
    "WarmupMultiplier",
    "build_lr_scheduler",
    "build_optimizer",
    "build_optimizer_from_config",
    "clip_gradients",
    "create_ddp_model",
    "get_default_optimizer_params",
    "get_event_storage",
    "maybe_add_gradient_clipping",
]
