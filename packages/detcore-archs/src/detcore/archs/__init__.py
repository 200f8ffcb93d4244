"""detcore.archs: meta-architectures, configs, build_model, detectron2 checkpoint and config compatibility.

Example::

    from detcore.archs import build_model, get_config, load_checkpoint

    cfg = get_config("mask_rcnn_R_50_FPN")
    model = build_model(cfg)
    load_checkpoint(model, "model_final.pkl")"""

from detcore.archs.build import (
    build_model,
)
from detcore.archs.checkpoint import (
    KeyReport,
    load_checkpoint,
    load_state_dict_file,
    save_checkpoint,
)
from detcore.archs.config import (
    AMPConfig,
    ClipGradientsConfig,
    Config,
    DataLoaderConfig,
    DatasetsConfig,
    FCOSConfig,
    InputConfig,
    ModelConfig,
    PanopticConfig,
    RetinaNetConfig,
    SolverConfig,
    TestAugConfig,
    TestConfig,
    config_from_dict,
    config_to_dict,
    dump_config,
    get_config,
    list_configs,
    load_config,
)
from detcore.archs.detectron2_config import (
    from_detectron2_config,
)
from detcore.archs.export import (
    ExportableRCNN,
    export_model,
)
from detcore.archs.inference import (
    fold_checkpoint_state,
    is_optimized_for_inference,
    optimize_for_inference,
)
from detcore.archs.meta_arch import (
    GeneralizedRCNN,
    ProposalNetwork,
    RetinaNet,
    detector_postprocess,
    sem_seg_postprocess,
)
from detcore.archs.meta_arch.dense_detector import (
    DenseDetector,
)
from detcore.archs.meta_arch.fcos import (
    FCOS,
)
from detcore.archs.meta_arch.panoptic_fpn import (
    PanopticFPN,
    combine_semantic_and_instance_outputs,
)
from detcore.archs.meta_arch.semantic_seg import (
    SemanticSegmentor,
)
from detcore.archs.meta_arch.test_time_augmentation import (
    DatasetMapperTTA,
    GeneralizedRCNNWithTTA,
)

__all__ = [
    "FCOS",
    "AMPConfig",
    "ClipGradientsConfig",
    "Config",
    "DataLoaderConfig",
    "DatasetMapperTTA",
    "DatasetsConfig",
    "DenseDetector",
    "ExportableRCNN",
    "FCOSConfig",
    "GeneralizedRCNN",
    "GeneralizedRCNNWithTTA",
    "InputConfig",
    "KeyReport",
    "ModelConfig",
    "PanopticConfig",
    "PanopticFPN",
    "ProposalNetwork",
    "RetinaNet",
    "RetinaNetConfig",
    "SemanticSegmentor",
    "SolverConfig",
    "TestAugConfig",
    "TestConfig",
    "build_model",
    "combine_semantic_and_instance_outputs",
    "config_from_dict",
    "config_to_dict",
    "detector_postprocess",
    "dump_config",
    "export_model",
    "fold_checkpoint_state",
    "from_detectron2_config",
    "get_config",
    "is_optimized_for_inference",
    "list_configs",
    "load_checkpoint",
    "load_config",
    "load_state_dict_file",
    "optimize_for_inference",
    "save_checkpoint",
    "sem_seg_postprocess",
]
