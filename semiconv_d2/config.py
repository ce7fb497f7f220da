"""Config keys of semi-convolutional Mask R-CNN (Novotny et al., ECCV 2018)."""

from detectron2.config import CfgNode as CN


def add_semiconv_config(cfg: CN) -> None:
    """Add ``MODEL.SEMICONV.*`` to ``cfg`` (in place).

    The model is detectron2's GeneralizedRCNN with ``ROI_HEADS.NAME: SemiConvROIHeads`` and
    ``ROI_MASK_HEAD.NAME: SemiConvMaskHead``; every other key is Mask R-CNN's. Defaults are the
    paper's values where it gives one; the others are our choices (projects/SemiConv/README.md).
    """
    cfg.MODEL.SEMICONV = CN()
    _C = cfg.MODEL.SEMICONV
    # Embedding subnet shared by all FPN levels (sec. 3.5): 1x1 conv HIDDEN_DIM + ReLU + 3x3
    # conv to EMBED_DIM. Paper: 256 and D = 8.
    _C.HIDDEN_DIM = 256
    _C.EMBED_DIM = 8
    # Factor on the gradient that the embedding subnet sends into the shared FPN tensors.
    # Paper: "downscale ... by a factor of 10", i.e. 0.1.
    _C.GRAD_SCALE = 0.1
    # Semi-convolutional embedding Psi_u = Phi_u + u on the first two dimensions (eq. 3).
    # False gives plain convolutional embeddings Phi_u (the paper's "convolutional" ablation).
    _C.SEMI_CONV = True
    # Scale of u (the paper is silent): u = (x, y) image-pixel coordinates of the pixel centre
    # divided by COORD_UNIT, i.e. COORD_UNIT pixels of the network input make one unit of u.
    # Our choice: 64 on COCO (16 on the 128-px shapes images).
    _C.COORD_UNIT = 64.0
    # Initial sigma of the steered bilateral Laplacian kernel K(u, v) = exp(-||Psi_u - Psi_v||
    # / sigma) (eq. 9), learnable (stored as log sigma). In units of u. Paper: not given.
    _C.SIGMA_INIT = 1.0
    # Weight of the embedding loss L(Psi | x, S) (eq. 5, non-squared distance to the instance
    # mean). Paper: not given; 1.0.
    _C.EMBED_LOSS_WEIGHT = 1.0
    # FPN levels on which an instance's embedding loss is computed (paper silent):
    # "assigned" = the level its ground-truth box is assigned to by the mask RoI pooler (where
    # its RoIs crop their embeddings), "all" = every level of ROI_HEADS.IN_FEATURES.
    _C.EMBED_LOSS_LEVELS = "assigned"
    # Weight of the secondary BCE between the kernel K(u_s, u) and the ground-truth mask
    # (sec. 3.5). Paper: not given; 1.0.
    _C.KERNEL_LOSS_WEIGHT = 1.0
    # The Mask R-CNN mask loss is taken on the fused score s_hat = s + log K (True) or on the
    # mask head's own score s (False). Paper: s_hat gives the final probabilities and the model
    # is trained end to end; which score the mask loss sees is not stated. Our choice: True.
    _C.MASK_LOSS_ON_FUSED = True
