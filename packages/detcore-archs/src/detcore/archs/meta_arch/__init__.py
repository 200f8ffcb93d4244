"""Meta-architectures: models from a list of input dicts to a list of output dicts."""

from detcore.archs.meta_arch.postprocessing import detector_postprocess, sem_seg_postprocess
from detcore.archs.meta_arch.rcnn import GeneralizedRCNN, ProposalNetwork
from detcore.archs.meta_arch.retinanet import RetinaNet

__all__ = ["GeneralizedRCNN", "ProposalNetwork", "RetinaNet", "detector_postprocess", "sem_seg_postprocess"]
