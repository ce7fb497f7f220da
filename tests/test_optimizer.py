"""Optimizer from the config."""

import pytest
import torch
from detectron2.config import get_cfg
from torch import nn

from instseg_d2.config import add_instseg_config
from instseg_d2.engine import build_optimizer


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Sequential(nn.Conv2d(4, 4, 1), nn.GroupNorm(2, 4))


def _cfg(**solver):
    cfg = get_cfg()
    add_instseg_config(cfg)
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.WEIGHT_DECAY = 0.01
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def _groups(opt, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in opt.param_groups for p in g["params"]}


def test_sgd_and_adamw_with_multiplier_and_norm_decay():
    model = Net()
    opt = build_optimizer(_cfg(BACKBONE_MULTIPLIER=0.5), model)
    assert isinstance(opt, torch.optim.SGD)
    g = _groups(opt, model)
    assert g["backbone.0.weight"]["lr"] == pytest.approx(0.05)
    assert g["head.0.weight"]["lr"] == pytest.approx(0.1)
    assert g["backbone.1.weight"]["weight_decay"] == 0.0  # BatchNorm: no decay
    assert g["head.1.weight"]["weight_decay"] == 0.0  # GroupNorm: no decay
    assert g["head.0.weight"]["weight_decay"] == pytest.approx(0.01)
    opt = build_optimizer(_cfg(OPTIMIZER="AdamW", BETAS=(0.8, 0.9)), model)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["betas"] == (0.8, 0.9)
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER='LAMB'"):
        build_optimizer(_cfg(OPTIMIZER="LAMB"), model)


def test_full_model_gradient_clipping():
    model = Net()
    cfg = _cfg(OPTIMIZER="SGD", WEIGHT_DECAY=0.0, MOMENTUM=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1e-3
    opt = build_optimizer(cfg, model)
    before = [p.detach().clone() for p in model.parameters()]
    (model.head(model.backbone(torch.randn(2, 3, 8, 8))) ** 2).sum().mul(1e3).backward()
    opt.step()
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert step.norm().item() == pytest.approx(0.1 * 1e-3, rel=1e-3)  # lr x clipped norm
