"""Optimizer from the config: SGD or AdamW, backbone LR multiplier, no decay on norms, clipping."""

import itertools

import torch
from detectron2.config import CfgNode
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Build the optimizer named by ``SOLVER.OPTIMIZER``.

    * parameters of ``model.backbone`` get ``SOLVER.BACKBONE_MULTIPLIER`` x the learning rate;
    * norm layers get ``SOLVER.WEIGHT_DECAY_NORM`` (0: no decay), biases
      ``SOLVER.WEIGHT_DECAY_BIAS`` and ``SOLVER.BIAS_LR_FACTOR``;
    * ``SOLVER.CLIP_GRADIENTS``: detectron2's "value" / "norm" per-parameter clipping, or
      "full_model" (one norm over all parameters, as SparseInst).
    """
    mult = cfg.SOLVER.BACKBONE_MULTIPLIER
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        lr_factor_func=lambda name: mult if name.startswith("backbone.") else 1.0,
    )
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "SGD":
        opt = torch.optim.SGD(
            params,
            lr=cfg.SOLVER.BASE_LR,
            momentum=cfg.SOLVER.MOMENTUM,
            nesterov=cfg.SOLVER.NESTEROV,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        )
    elif name == "ADAMW":
        opt = torch.optim.AdamW(
            params,
            lr=cfg.SOLVER.BASE_LR,
            betas=tuple(cfg.SOLVER.BETAS),
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        )
    else:
        raise ValueError(f"SOLVER.OPTIMIZER={cfg.SOLVER.OPTIMIZER!r}: expected 'SGD' or 'ADAMW'")
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        return _add_full_model_clipping(opt, clip.CLIP_VALUE)
    return maybe_add_gradient_clipping(cfg, opt)


def _add_full_model_clipping(optimizer: torch.optim.Optimizer, max_norm: float):
    base = type(optimizer)

    class FullModelGradientClip(base):
        def step(self, closure=None):
            params = itertools.chain(*[g["params"] for g in self.param_groups])
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            return super().step(closure)

    FullModelGradientClip.__name__ = base.__name__ + "WithFullModelGradientClip"
    optimizer.__class__ = FullModelGradientClip
    return optimizer
