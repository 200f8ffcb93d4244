"""detcore.backbones: Backbone API, ResNet/ResNeXt, FPN, weight converters."""

from detcore.backbones.backbone import Backbone
from detcore.backbones.convert import convert_c2_resnet, convert_torchvision_resnet, load_c2_pkl
from detcore.backbones.fpn import (
    FPN,
    FPNConfig,
    LastLevelMaxPool,
    LastLevelP6P7,
    ResNetFPNConfig,
    build_fcos_resnet_fpn_backbone,
    build_resnet_fpn_backbone,
    build_retinanet_resnet_fpn_backbone,
)
from detcore.backbones.fusion import fuse_frozen_batchnorm
from detcore.backbones.resnet import (
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    DeformBottleneckBlock,
    ResNet,
    ResNetConfig,
    build_resnet_backbone,
    make_stage,
)

__all__ = [
    "FPN",
    "Backbone",
    "BasicBlock",
    "BasicStem",
    "BottleneckBlock",
    "DeformBottleneckBlock",
    "FPNConfig",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "ResNet",
    "ResNetConfig",
    "ResNetFPNConfig",
    "build_fcos_resnet_fpn_backbone",
    "build_resnet_backbone",
    "build_resnet_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone",
    "convert_c2_resnet",
    "convert_torchvision_resnet",
    "fuse_frozen_batchnorm",
    "load_c2_pkl",
    "make_stage",
]
