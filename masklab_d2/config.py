"""Config keys of MaskLab (Chen et al., CVPR 2018), all under ``MODEL.MASKLAB``.

The paper is the only specification (no public code). Keys whose value the paper fixes give that
value as default; keys for what the paper leaves open say so and give our choice.
"""

from detectron2.config import CfgNode as CN


def add_masklab_config(cfg: CN) -> None:
    """Add MaskLab's keys to ``cfg`` (in place)."""
    cfg.MODEL.MASKLAB = CN()
    _C = cfg.MODEL.MASKLAB

    # --- Dense branches: semantic logits (K + 1 channels, background last, as detectron2's class
    # indices) and class-agnostic direction logits, "1x1 convs after the last shared feature map".
    # Open in the paper (ResNet-C4 with atrous conv, output stride 8): we use FPN and fuse these
    # levels (bilinear upsampling to the first one's stride, then sum) as the shared map.
    _C.DENSE_IN_FEATURES = ["p2", "p3", "p4", "p5"]
    # Normalisation (+ ReLU) of the fused map, detectron2 norm names; "" = the raw sum. Not in
    # the paper, whose shared map (ResNet's conv5 block output) is normalised and rectified; the
    # raw sum of FPN levels (|x|^2 ~ 1200 per location at init) diverged at the shapes LR 0.02.
    _C.DENSE_NORM = "GN"
    # Optional 3x3 conv + norm + ReLU layers on the fused map before the two 1x1 predictors.
    # Paper: none.
    _C.DENSE_NUM_CONVS = 0
    _C.DENSE_CONV_DIM = 256
    # Number of directions (angle sectors of 360/D degrees). Paper: 8 (Table 3).
    _C.NUM_DIRECTIONS = 8
    # Number of distance bins (rings) per direction. Paper: 4 (Table 2, Fig. 6): 8 x 4 = 32
    # direction channels. Open: how distances are normalised. Ours: the radius of a location in
    # box-normalised coordinates, r = ||(2 dx / w, 2 dy / h)|| (r = 1 on the ellipse inscribed in
    # the box), cut into rings of width MAX_DISTANCE / NUM_DISTANCE_BINS; r beyond MAX_DISTANCE
    # (the box corners) falls into the outermost ring.
    _C.NUM_DISTANCE_BINS = 4
    _C.MAX_DISTANCE = 1.0

    # --- Per-box crops ("crop and resize"). Paper: 41 x 41 (Table 1).
    _C.CROP_SIZE = 41
    # ROIAlign sampling ratio for the crops (0: adaptive, as detectron2's mask pooler).
    _C.POOLER_SAMPLING_RATIO = 0
    # Initial weights of the class-agnostic 1x1 fusion conv on (semantic crop, pooled direction).
    # Paper (sec. 4.1): (0.5, 1).
    _C.FUSION_INIT = (0.5, 1.0)

    # --- Mask refinement with hypercolumn features (Fig. 4, Table 4): the coarse mask logits
    # concatenated with crops of these backbone features. Paper's best: conv1 + conv2, i.e. our
    # "conv1" (output of the first 7x7 conv + ReLU, stride 2, before the max pool) and "res2".
    # Empty list: no refinement (the coarse mask is the output).
    _C.HYPERCOLUMN_FEATURES = ["conv1", "res2"]
    # Paper: "three 5x5 convolution layers with 64 filters"; a 1x1 conv then predicts the mask.
    _C.REFINE_NUM_CONVS = 3
    _C.REFINE_CONV_DIM = 64
    _C.REFINE_KERNEL_SIZE = 5

    # --- Losses. The semantic and direction branches (and the mask head) are trained on
    # ground-truth boxes only (paper, sec. 4.1). Coarse and refined masks: sigmoid + per-pixel
    # binary cross-entropy (paper: "sigmoid for both"), weights open, ours 1 and 1.
    _C.COARSE_MASK_LOSS_WEIGHT = 1.0
    _C.REFINED_MASK_LOSS_WEIGHT = 1.0
    # Open in the paper: direct losses on the dense logits. Ours: softmax cross-entropy over the
    # K + 1 classes on the locations inside ground-truth boxes (outside: ignored, "trained only
    # with ground-truth boxes, without negatives", sec. 4.3), and softmax cross-entropy over the
    # 32 (direction, distance) bins on instance locations (target: the bin of the location seen
    # from its instance's box centre, as in Uhrig et al. [70]). 0 disables a loss, leaving only
    # the mask loss to flow through the crops (as position-sensitive maps in FCIS).
    _C.SEMANTIC_LOSS_WEIGHT = 1.0
    _C.DIRECTION_LOSS_WEIGHT = 1.0

    # --- Optional "deformable crop and resize" of the box classifier (sec. 3, Fig. 5 and 8;
    # Table 6 "DC": +1 mAP@0.75). Off by default, as in the paper's ablations before Table 6.
    _C.DEFORMABLE_CROP_AND_RESIZE = False
    # Each of the G x G sub-boxes (G = MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION) is cropped again
    # at k x k. Paper (Fig. 8): 7 x 7 sub-boxes of 2 x 2.
    _C.DEFORMABLE_SUB_BOX_SIZE = 2
    # Not in the paper: offsets are gamma * (o_x w, o_y h), gamma as in Dai et al.'s deformable
    # RoI pooling (0.1); the offset network is 3x3 conv (this width) + ReLU + 3x3 conv to 2.
    _C.DEFORMABLE_OFFSET_SCALE = 0.1
    _C.DEFORMABLE_OFFSET_DIM = 256
