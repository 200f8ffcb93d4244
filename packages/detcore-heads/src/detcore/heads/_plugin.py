"""detcore-heads's own plugin: declares the component kinds this package owns and registers its built-ins."""

from detcore.plugins import hookimpl


@hookimpl
def detcore_register_components(registry):
    registry.declare_kind("anchor_generator", "anchors per feature level")
    registry.declare_kind("proposal_generator", "RPN-style proposal generators")
    registry.declare_kind("rpn_head", "RPN prediction heads")
    registry.declare_kind("roi_heads", "ROI heads: box, mask and keypoint branches")
    registry.declare_kind("box_head", "box feature heads")
    registry.declare_kind("mask_head", "mask heads")
    registry.declare_kind("keypoint_head", "keypoint heads")
    registry.declare_kind("dense_head", "one-stage dense detection heads (RetinaNet, FCOS)")
    registry.declare_kind("sem_seg_head", "semantic segmentation heads")

    # built-ins, under detectron2's class names so detectron2 config NAME values map directly
    registry.add(
        "anchor_generator", "DefaultAnchorGenerator", "detcore.heads.anchor_generator:DefaultAnchorGenerator"
    )
    registry.add(
        "anchor_generator", "RotatedAnchorGenerator", "detcore.heads.anchor_generator:RotatedAnchorGenerator"
    )
    registry.add("rpn_head", "StandardRPNHead", "detcore.heads.proposal_generator.rpn:StandardRPNHead")
    registry.add("proposal_generator", "RPN", "detcore.heads.proposal_generator.rpn:RPN")
    registry.add(
        "proposal_generator",
        "PrecomputedProposals",
        "detcore.heads.proposal_generator.precomputed:precomputed_proposals",
    )
    registry.add("proposal_generator", "RRPN", "detcore.heads.proposal_generator.rrpn:RRPN")
    registry.add("roi_heads", "Res5ROIHeads", "detcore.heads.roi_heads.roi_heads:Res5ROIHeads")
    registry.add("roi_heads", "StandardROIHeads", "detcore.heads.roi_heads.roi_heads:StandardROIHeads")
    registry.add("roi_heads", "CascadeROIHeads", "detcore.heads.roi_heads.cascade_rcnn:CascadeROIHeads")
    registry.add("roi_heads", "RROIHeads", "detcore.heads.roi_heads.rotated_fast_rcnn:RROIHeads")
    registry.add("box_head", "FastRCNNConvFCHead", "detcore.heads.roi_heads.box_head:FastRCNNConvFCHead")
    registry.add(
        "mask_head", "MaskRCNNConvUpsampleHead", "detcore.heads.roi_heads.mask_head:MaskRCNNConvUpsampleHead"
    )
    registry.add(
        "keypoint_head",
        "KRCNNConvDeconvUpsampleHead",
        "detcore.heads.roi_heads.keypoint_head:KRCNNConvDeconvUpsampleHead",
    )
    registry.add("dense_head", "RetinaNetHead", "detcore.heads.dense.retinanet_head:RetinaNetHead")
    registry.add("dense_head", "FCOSHead", "detcore.heads.dense.fcos_head:FCOSHead")
    registry.add("sem_seg_head", "SemSegFPNHead", "detcore.heads.sem_seg:SemSegFPNHead")
