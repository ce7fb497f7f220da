"""Config keys of SparseInst (Cheng et al., CVPR 2022), under ``MODEL.SPARSE_INST``.

The key names follow the reference implementation (hustvl/SparseInst ``add_sparse_inst_config``)
so that its yaml files read the same; every default is the reference's. Unlike the reference,
this function only adds keys: it does not force ``MODEL.DEVICE`` and the optimizer keys
(``SOLVER.OPTIMIZER``, ``SOLVER.BACKBONE_MULTIPLIER``) belong to the platform.
"""

from detectron2.config import CfgNode as CN


def add_sparseinst_config(cfg: CN) -> None:
    """Add the SparseInst keys to ``cfg`` (in place)."""
    cfg.MODEL.SPARSE_INST = CN()
    si = cfg.MODEL.SPARSE_INST
    # Pad the batch to a multiple of this (the encoder's top-down path doubles res5 twice).
    si.SIZE_DIVISIBILITY = 32

    # ---- inference (paper Sec. 3.5: no NMS, no sorting) ----
    # Keep a query if sqrt(p_cls * p_obj) > this (reference 0.005).
    si.CLS_THRESHOLD = 0.005
    # Mask binarisation threshold, also used by the maskness rescoring (reference 0.45).
    si.MASK_THRESHOLD = 0.45
    # At most TEST.DETECTIONS_PER_IMAGE (100) detections per image, the highest scores
    # (reference: no cap; with 100 queries this changes nothing).
    cfg.register_renamed_key("MODEL.SPARSE_INST.MAX_DETECTIONS", "TEST.DETECTIONS_PER_IMAGE")

    # ---- instance context encoder (paper Sec. 3.2) ----
    si.ENCODER = CN()
    # Name in SPARSEINST_ENCODER_REGISTRY.
    si.ENCODER.NAME = "InstanceContextEncoder"
    # Backbone features C3, C4, C5 (strides 8, 16, 32); the output has the stride of the first.
    si.ENCODER.IN_FEATURES = ["res3", "res4", "res5"]
    # D, channels of the encoder and of its single output map (reference 256).
    si.ENCODER.NUM_CHANNELS = 256
    # Bins of the pyramid pooling module on C5 (PSPNet; reference (1, 2, 3, 6)).
    si.ENCODER.PPM_BINS = [1, 2, 3, 6]

    # ---- IAM-based decoder (paper Sec. 3.3) ----
    si.DECODER = CN()
    # Name in SPARSEINST_DECODER_REGISTRY: "BaseIAMDecoder" (IAM), "GroupIAMDecoder" (G-IAM),
    # "GroupIAMSoftDecoder" (G-IAM with softmax activation maps).
    si.DECODER.NAME = "GroupIAMDecoder"
    # N, number of instance activation maps = predictions per image (reference 100).
    si.DECODER.NUM_MASKS = 100
    # Number of classes (set from the training set by the platform).
    si.DECODER.NUM_CLASSES = 80
    # D_k, length of the mask kernels = channels of the mask features (reference 128).
    si.DECODER.KERNEL_DIM = 128
    # Masks are predicted at the encoder's stride (8) and upsampled by this (to stride 4).
    si.DECODER.SCALE_FACTOR = 2.0
    # G-IAM: number of activation-map groups per instance (reference 4, hard-coded there in
    # the feature reshape; a key here). The base IAM decoder ignores it.
    si.DECODER.GROUPS = 4
    # Instance branch: INST.CONVS 3x3 convs of INST.DIM channels before F_iam (reference 4, 256).
    si.DECODER.INST = CN()
    si.DECODER.INST.DIM = 256
    si.DECODER.INST.CONVS = 4
    # Mask branch: MASK.CONVS 3x3 convs of MASK.DIM channels, then a 1x1 to KERNEL_DIM.
    si.DECODER.MASK = CN()
    si.DECODER.MASK.DIM = 256
    si.DECODER.MASK.CONVS = 4
    # pi: prior probability used to initialise the biases of F_iam and of the classifier
    # (RetinaNet's -log((1 - pi) / pi); reference 0.01).
    si.DECODER.PRIOR_PROB = 0.01

    # ---- losses (paper Sec. 3.4, Eq. 3) ----
    si.LOSS = CN()
    # lambda_cls: sigmoid focal loss over all queries and classes, / number of objects.
    si.LOSS.CLASS_WEIGHT = 2.0
    # lambda_mask * (BCE): per-pixel BCE of matched masks, mean over pixels (reference 5.0).
    si.LOSS.MASK_PIXEL_WEIGHT = 5.0
    # lambda_mask * (dice): dice loss of matched masks, summed, / number of objects (2.0).
    si.LOSS.MASK_DICE_WEIGHT = 2.0
    # lambda_s: IoU-aware objectness, BCE against the IoU of the matched mask (reference 1.0).
    si.LOSS.OBJECTNESS_WEIGHT = 1.0
    # Focal loss alpha, gamma (reference 0.25, 2.0).
    si.LOSS.FOCAL_ALPHA = 0.25
    si.LOSS.FOCAL_GAMMA = 2.0
    # Smoothing of the dice denominator, in the loss and in the matcher (reference 1e-4).
    si.LOSS.DICE_EPS = 1e-4
    # The objectness target IoU binarises the predicted mask at this probability (0.4) and the
    # (bilinearly resampled) target at 0.5.
    si.LOSS.IOU_PRED_THRESHOLD = 0.4
    si.LOSS.IOU_TARGET_THRESHOLD = 0.5

    # ---- bipartite matching (paper Sec. 3.4, Eq. 2) ----
    si.MATCHER = CN()
    # Matching score C(i, k) = dice(m_i, t_k)^alpha * p_i(c_k)^beta (reference 0.8, 0.2).
    si.MATCHER.ALPHA = 0.8
    si.MATCHER.BETA = 0.2
