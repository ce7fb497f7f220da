"""A ResNet pretrained once on the embedded data, the comparison's stand-in for ImageNet.

Every paper starts from an ImageNet backbone, which cannot be downloaded everywhere and is far
too large for a CPU comparison. Instead, :func:`pretrain_backbone` trains detectron2's ResNet as
an image classifier on object-centred crops of the shapes (one shape of one of the five classes
on the dataset's backgrounds; :func:`~instseg_d2.data.shapes.render_object_crop`), exactly as an
ImageNet backbone is a classifier of object-centred photos. The result is written in
detectron2's model-zoo pickle format with ``matching_heuristics`` so that every method's
backbone (``backbone.bottom_up.res2...`` or ``backbone.res2...``) loads it through
``MODEL.WEIGHTS``.

``MODEL.WEIGHTS instseg://pretrained/shapes_R_18.pkl`` names that file: it is built on first
use into ``$INSTSEG_CACHE/pretrained/`` (deterministic from :data:`PRETRAIN_SPECS`; a few minutes
of CPU) and reused afterwards. ``tools/pretrain_backbone.py`` builds it ahead of time.
"""

import fcntl
import logging
import os
import pickle
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Dict, Tuple

import numpy as np
import torch
from detectron2.utils.file_io import PathHandler, PathManager
from torch import nn
from torch.nn import functional as F

from .data.shapes import SHAPES_CLASSES, cache_root, render_object_crop

logger = logging.getLogger(__name__)

PREFIX = "instseg://pretrained/"
# detectron2's ImageNet normalisation in BGR order, as every shapes config (INPUT.FORMAT BGR)
PIXEL_MEAN = (103.530, 116.280, 123.675)
PIXEL_STD = (57.375, 57.120, 58.395)


@dataclass(frozen=True)
class PretrainSpec:
    """Everything that determines a pretrained backbone; changing it yields a new file."""

    depth: int = 18
    res2_out_channels: int = 64
    crop_size: int = 64
    shape_size: Tuple[float, float] = (12.0, 60.0)  # object side / diameter in the crop, px
    background_contrast: Tuple[float, float] = (0.2, 0.7)
    num_samples: int = 20000  # distinct crops, seeded; flipped at random during training
    iterations: int = 2000
    batch_size: int = 32
    lr: float = 1e-3  # AdamW, cosine decay after a 50-iteration warm-up
    weight_decay: float = 0.05
    seed: int = 0
    version: int = 1


PRETRAIN_SPECS: Dict[str, PretrainSpec] = {"shapes_R_18.pkl": PretrainSpec()}


def build_resnet(spec: PretrainSpec) -> nn.Module:
    """detectron2's ResNet (BN, all stages trainable) ending at res5, (N, 3, H, W) ->
    {"res5": (N, 512 or 2048, H/32, W/32)}."""
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone import build_resnet_backbone

    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = spec.depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = spec.res2_out_channels
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    return build_resnet_backbone(cfg, ShapeSpec(channels=3))


class Classifier(nn.Module):
    """ResNet + global average pooling + linear classifier, (N, 3, H, W) -> (N, K) logits."""

    def __init__(self, spec: PretrainSpec, num_classes: int):
        super().__init__()
        self.backbone = build_resnet(spec)
        self.fc = nn.Linear(self.backbone.output_shape()["res5"].channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x)["res5"].mean(dim=(2, 3)))


def make_crops(spec: PretrainSpec, num: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``num`` crops as a normalised BGR float tensor (num, 3, S, S) and labels (num,)."""
    images = np.empty((num, spec.crop_size, spec.crop_size, 3), np.uint8)
    labels = np.empty(num, np.int64)
    for i in range(num):
        rng = np.random.default_rng([seed, i])
        images[i], labels[i] = render_object_crop(
            rng, spec.crop_size, spec.shape_size, spec.background_contrast
        )
    x = torch.from_numpy(images[..., ::-1].copy()).permute(0, 3, 1, 2).float()
    x = (x - torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)) / torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    return x, torch.from_numpy(labels)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    model.eval()
    hits = sum((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item()
               for i in range(0, len(x), batch))  # fmt: skip
    model.train()
    return hits / len(x)


def pretrain_backbone(spec: PretrainSpec, out_path: str, log_period: int = 100) -> dict:
    """Train the classifier of ``spec`` and write its ResNet to ``out_path`` (model-zoo pickle).

    Returns the record stored in the file: the spec, the final training loss, the accuracy on
    2000 held-out crops (seed + 1) and the wall time.
    """
    torch.manual_seed(spec.seed)
    start = time.time()
    x, y = make_crops(spec, spec.num_samples, spec.seed)
    x_val, y_val = make_crops(spec, 2000, spec.seed + 1)
    model = Classifier(spec, len(SHAPES_CLASSES))
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    warmup = min(50, spec.iterations)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda it: (it + 1) / warmup if it < warmup else
        0.5 * (1 + np.cos(np.pi * (it - warmup) / max(1, spec.iterations - warmup))),
    )  # fmt: skip
    gen = torch.Generator().manual_seed(spec.seed)
    losses = []
    for it in range(spec.iterations):
        idx = torch.randint(len(x), (spec.batch_size,), generator=gen)
        xb = x[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        xb[flip] = xb[flip].flip(-1)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log_period and ((it + 1) % log_period == 0 or it + 1 == spec.iterations):
            logger.info(
                f"pretraining {it + 1}/{spec.iterations}: loss {np.mean(losses[-log_period:]):.4f}"
                f" ({time.time() - start:.0f} s)"
            )
    record = {
        "spec": asdict(spec),
        "final_loss": float(np.mean(losses[-50:])),
        "val_accuracy": accuracy(model, x_val, y_val),
        "wall_s": round(time.time() - start, 1),
    }
    logger.info(f"pretrained backbone: held-out crop accuracy {record['val_accuracy']:.4f}")
    state = {k: v.detach().cpu().numpy() for k, v in model.backbone.state_dict().items()
             if not k.endswith("num_batches_tracked")}  # fmt: skip
    data = {
        "model": state,
        "__author__": "instseg_d2 shapes pretraining",
        "matching_heuristics": True,
        "pretraining": record,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = tempfile.NamedTemporaryFile(dir=os.path.dirname(os.path.abspath(out_path)), delete=False)
    with tmp:
        pickle.dump(data, tmp)
    os.replace(tmp.name, out_path)
    return record


def pretrained_path(name: str) -> str:
    """Local path of the pretrained backbone ``name`` (a key of PRETRAIN_SPECS), built on first
    use (safe across processes)."""
    if name not in PRETRAIN_SPECS:
        raise FileNotFoundError(
            f"{PREFIX}{name}: no such pretrained backbone; known: {sorted(PRETRAIN_SPECS)}"
        )
    spec = PRETRAIN_SPECS[name]
    import hashlib
    import json

    digest = hashlib.sha1(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:8]
    folder = os.path.join(cache_root(), "pretrained")
    path = os.path.join(folder, f"{os.path.splitext(name)[0]}_{digest}.pkl")
    if os.path.isfile(path):
        return path
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isfile(path):
            logger.warning(
                f"{PREFIX}{name} is not in the cache yet: pretraining it once now "
                f"({spec.iterations} iterations, a few minutes of CPU) into {path}"
            )
            pretrain_backbone(spec, path)
    return path


class PretrainedHandler(PathHandler):
    """``instseg://pretrained/<name>`` -> the cached file of :func:`pretrained_path`."""

    def _get_supported_prefixes(self):
        return [PREFIX]

    def _get_local_path(self, path, **kwargs):
        return pretrained_path(path[len(PREFIX) :].split("?")[0])

    def _open(self, path, mode="r", **kwargs):
        return PathManager.open(self._get_local_path(path), mode, **kwargs)


PathManager.register_handler(PretrainedHandler())
