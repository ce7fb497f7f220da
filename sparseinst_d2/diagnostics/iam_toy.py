"""Do SparseInst's instance activation maps learn to find the objects? A toy task that isolates
the decoder and the losses from the backbone and the encoder.

    python -m sparseinst_d2.diagnostics iam-toy [--lr 1e-3] [--dim 16] [--steps 400] [--seeds 0 1 2]

The input features (B, 8, 16, 16) hold 2-3 squares per image (side 3-6 cells, drawn in turn,
a later one hiding an earlier one): inside an object its class (one of 3) is a one-hot
channel, and one more channel marks objects; all channels carry N(0, 0.1) noise. An instance
can therefore be classified only if its activation maps pool from its own object. The IAM
decoder (``BaseIAMDecoder``, 2 convs, ``--dim`` wide, 8 queries) and ``SparseInstCriterion``
(the reference weights) are trained with AdamW (weight decay 0.05, batch 8) from random
initialisation; every ``--every`` steps, 64 held-out images give the matched queries' class
top-1 (chance 1/3), the share of their maps' pooling weight on their object, and the share a
uniform map would give (the objects' area fraction).
"""

import argparse
from typing import Optional

import torch
import torch.nn.functional as F

from ..decoder import BaseIAMDecoder, InstanceBranch, MaskBranch
from ..loss import SparseInstCriterion
from ..matcher import SparseInstMatcher
from .maps import share_on_objects

K, C, S = 3, 8, 16  # classes, feature channels, map side


def toy_batch(batch: int, gen: torch.Generator):
    """(B, C, S, S) features, per image (G, 2S, 2S) target masks (stride 4, what is visible of
    each object) and (G,) labels."""
    feats = torch.randn(batch, C, S, S, generator=gen) * 0.1
    targets, labels = [], []
    for b in range(batch):
        masks, classes = [], []
        for _ in range(int(torch.randint(2, 4, (1,), generator=gen))):
            side = int(torch.randint(3, 7, (1,), generator=gen))
            y, x = torch.randint(0, S - side + 1, (2,), generator=gen).tolist()
            m = torch.zeros(S, S)
            m[y : y + side, x : x + side] = 1.0
            masks = [prev * (1 - m) for prev in masks]  # the new square hides the old ones
            masks.append(m)
            classes.append(int(torch.randint(0, K, (1,), generator=gen)))
        keep = [i for i, m in enumerate(masks) if m.sum() > 0]
        for i in keep:
            feats[b, classes[i]] += masks[i]
            feats[b, K] += masks[i]
        targets.append(
            F.interpolate(torch.stack([masks[i] for i in keep])[:, None], scale_factor=2.0)[:, 0]
        )
        labels.append(torch.tensor([classes[i] for i in keep]))
    return feats, targets, labels


def build(dim: int, seed: int):
    """The decoder and the criterion, initialised under ``seed``."""
    torch.manual_seed(seed)
    inst = InstanceBranch(C + 2, dim=dim, num_convs=2, num_masks=8, num_classes=K, kernel_dim=16)
    mask = MaskBranch(C + 2, dim=dim, num_convs=2, kernel_dim=16)
    dec = BaseIAMDecoder(inst_branch=inst, mask_branch=mask, scale_factor=2.0)
    return dec, SparseInstCriterion(matcher=SparseInstMatcher(), num_classes=K)


def measure(dec, crit, num_images: int = 64, seed: int = 99) -> dict:
    """Class top-1 of the matched queries, their maps' weight on their object, and a uniform
    map's (the area fraction), over ``num_images`` held-out images."""
    feats, targets, labels = toy_batch(num_images, torch.Generator().manual_seed(seed))
    ib = dec.inst_branch
    with torch.no_grad():
        out = dec(feats)
        indices = crit.matcher(out["pred_masks"], out["pred_logits"], targets, labels)
        maps = ib.normalize(out["pred_iam"]).view(num_images, ib.groups, ib.num_masks, S, S)
        top1, on_object, area = [], [], []
        for b, (q, t) in enumerate(indices):
            top1.append(out["pred_logits"][b, q].argmax(-1) == labels[b][t])
            on_object.append(share_on_objects(maps[b][:, q], targets[b][t]))
            uniform = torch.full_like(maps[b][:1, q], 1.0 / S**2)
            area.append(share_on_objects(uniform, targets[b][t]))
    vals = [torch.cat(v).float().mean().item() for v in (top1, on_object, area)]
    return dict(zip(("top1", "on_object", "area"), vals))


def train(dec, crit, steps: int, lr: float, every: int = 0, seed: int = 1):
    """AdamW steps on fresh toy batches; yields (step, measure(...)) every ``every`` steps."""
    opt = torch.optim.AdamW(dec.parameters(), lr=lr, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        feats, targets, labels = toy_batch(8, gen)
        loss = sum(crit(dec(feats), targets, labels).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if every and step % every == 0:
            yield step, measure(dec, crit)


def main(argv=None, prog: Optional[str] = None) -> dict:
    """Train and measure the toy decoder of every seed, print the figures; return
    ``{seed: measure(...)}`` after the last step."""
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = {}
    for seed in args.seeds:
        dec, crit = build(args.dim, seed)
        m = measure(dec, crit)
        print(f"seed {seed} step 0: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
        for step, m in train(dec, crit, args.steps, args.lr, args.every, seed=seed + 1):
            print(f"seed {seed} step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
        results[seed] = m
    return results
