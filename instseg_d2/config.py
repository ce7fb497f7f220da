"""Config keys of the shared platform (trainer, data, evaluation).

Like every method's ``add_<method>_config``, :func:`add_instseg_config` only adds keys to the cfg
it is given; it never touches detectron2's global defaults.
"""

from detectron2.config import CfgNode as CN


def add_instseg_config(cfg: CN) -> None:
    """Add the platform's keys to ``cfg`` (in place)."""
    # Optimizer. "SGD" uses SOLVER.MOMENTUM / NESTEROV, "ADAMW" uses SOLVER.BETAS.
    # Norm layers get SOLVER.WEIGHT_DECAY_NORM (detectron2 default 0.0: no decay on norms).
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BETAS = (0.9, 0.999)
    # Learning-rate factor for the parameters of `model.backbone` (SparseInst: 1.0).
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0
    # Instance-aware crop: when INPUT.CROP.ENABLED, the crop window is placed so that it
    # contains at least one whole instance box (its centre if the box is larger than the crop),
    # as AdelaiDet's RandomCropWithInstance.
    cfg.INPUT.CROP.CROP_INSTANCE = True
    # Metric that decides which evaluation's weights are kept as model_best.pth
    # (with TEST.EVAL_PERIOD > 0). Empty string: keep no best checkpoint.
    cfg.TEST.BEST_CHECKPOINT_METRIC = "segm/AP"
    # Boundary AP (Cheng et al., CVPR 2021) next to segm AP: COCO AP whose IoU is
    # min(mask IoU, boundary IoU), boundaries d = DILATION_RATIO x image diagonal wide (0.02).
    cfg.TEST.BOUNDARY_AP = False
    cfg.TEST.BOUNDARY_DILATION_RATIO = 0.02
    # Training health, checked at the end of training (instseg_d2/engine/health.py), one loud
    # warning for: a loss term whose median over the last STALL_ITERS iterations is within
    # STALL_TOLERANCE (relative) of its median over the first min(20, STALL_ITERS // 4)
    # iterations ("has not moved"; 0 disables), and an evaluation without any detection (its
    # AP is reported as 0 instead of nan).
    cfg.TEST.STALL_ITERS = 200
    cfg.TEST.STALL_TOLERANCE = 0.05
    # True: train_net.py exits with code 3 when the health check finds a problem (sweeps).
    cfg.TEST.STRICT_HEALTH = False
    # Early data check by train_net.py, before the model is built: every image of
    # DATASETS.TRAIN and DATASETS.TEST is opened in parallel worker processes and must have
    # the size its annotations say. "full": also decode every pixel (finds truncated files);
    # "header": sizes only (PIL reads the header); "none": skip the check.
    cfg.DATASETS.IMAGE_CHECK = "full"
