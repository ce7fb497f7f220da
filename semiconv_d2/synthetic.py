"""The synthetic experiment of sec. 4.1: identical dots on a regular grid.

The same small CNN predicts D-dimensional pixel embeddings, either convolutional (Phi_u) or
semi-convolutional (Psi_u = Phi_u + u), trained with the embedding loss (eq. 5) only. The
foreground embeddings of held-out images are clustered by k-means with K = the true number of
dots and scored by the adjusted Rand index against the ground-truth instances. The paper's
claim: convolutional embeddings give near-random clusters, semi-convolutional ones separate
the dots almost perfectly.

    python -m semiconv_d2.synthetic [--iters 300] [--grid 5] [--output-dir DIR]

prints a markdown table and the machine; with ``--output-dir`` it writes ``results.json`` and
``clusters.png`` (per test image: ground truth | convolutional | semi-convolutional clusters).
"""

import argparse
import json
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import nn

from .clustering import adjusted_rand_index, kmeans
from .embedding import add_pixel_coordinates
from .losses import instance_embedding_loss


@dataclass(frozen=True)
class DotsSpec:
    """A grid x grid lattice of identical discs, shifted by a random offset per image."""

    size: int = 80  # image side, pixels
    grid: int = 5  # dots per row and column
    spacing: int = 14  # distance between neighbouring dot centres, pixels
    radius: float = 3.5  # dot radius, pixels


def make_dots(spec: DotsSpec, num: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``num`` images of identical white dots on black, each grid shifted at random.

    Returns:
        images (num, 3, S, S) float in {0, 1}; instances (num, S, S) int64, 0 for background
        and 1..grid^2 for the dots.
    """
    span = (spec.grid - 1) * spec.spacing
    margin = spec.size - span - 2 * int(np.ceil(spec.radius)) - 2
    if margin < 0:
        raise ValueError(f"DotsSpec {spec}: the grid does not fit in the image")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: spec.size, : spec.size] + 0.5
    inst = np.zeros((num, spec.size, spec.size), dtype=np.int64)
    for n in range(num):
        oy, ox = rng.uniform(0, margin, size=2) + np.ceil(spec.radius) + 1
        for k in range(spec.grid**2):
            cy, cx = oy + (k // spec.grid) * spec.spacing, ox + (k % spec.grid) * spec.spacing
            inst[n][(yy - cy) ** 2 + (xx - cx) ** 2 <= spec.radius**2] = k + 1
    inst = torch.from_numpy(inst)
    images = (inst > 0).float()[:, None].expand(-1, 3, -1, -1).contiguous()
    return images, inst


class DotsEmbeddingNet(nn.Module):
    """Conv stack (receptive field 19 px, stride 1) + 1x1 conv to D-dim embeddings.

    The paper uses ResNet-50 truncated after res2c + 1x1 filters; this CPU-sized stand-in keeps
    what matters: a translation-equivariant CNN whose receptive field covers a dot.
    ``semi_conv`` adds u (pixel coordinates / ``coord_unit``) to the first two dimensions.
    """

    def __init__(self, semi_conv: bool, embed_dim: int = 8, width: int = 32, coord_unit=14.0):
        super().__init__()
        layers, c = [], 3
        for dilation in (1, 1, 2, 2, 3):
            layers += [nn.Conv2d(c, width, 3, padding=dilation, dilation=dilation), nn.ReLU()]
            c = width
        self.features = nn.Sequential(*layers)
        self.embed = nn.Conv2d(width, embed_dim, 1)
        self.semi_conv = semi_conv
        self.coord_unit = coord_unit

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, D, S, S) embeddings Psi (or Phi without ``semi_conv``)."""
        phi = self.embed(self.features(images))
        return add_pixel_coordinates(phi, 1, self.coord_unit) if self.semi_conv else phi


def batch_embedding_loss(psi: torch.Tensor, instances: torch.Tensor) -> torch.Tensor:
    """Eq. 5 averaged over every dot of every image. psi (N, D, S, S), instances (N, S, S)."""
    losses = []
    for e, inst in zip(psi, instances):
        ids = inst.unique()
        ids = ids[ids > 0]
        losses.append(instance_embedding_loss(e, inst[None] == ids[:, None, None]))
    return torch.cat(losses).mean()


def train_embeddings(
    net: nn.Module,
    images: torch.Tensor,
    instances: torch.Tensor,
    iters: int,
    batch: int = 8,
    lr: float = 0.01,
    seed: int = 0,
) -> List[float]:
    """SGD (momentum 0.9) on the embedding loss; returns the loss of every iteration."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    history = []
    net.train()
    for _ in range(iters):
        idx = torch.randint(len(images), (batch,), generator=gen)
        loss = batch_embedding_loss(net(images[idx]), instances[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history


@torch.no_grad()
def cluster_dots(
    net: nn.Module, images: torch.Tensor, instances: torch.Tensor, seed: int = 0
) -> Tuple[List[float], List[np.ndarray]]:
    """Per image: k-means (K = number of dots) on the foreground embeddings, ARI vs the GT.

    Returns:
        the ARI of each image, and each image's (S, S) map of cluster labels (-1 background).
    """
    net.eval()
    psi = net(images)
    scores, maps = [], []
    for e, inst in zip(psi, instances):
        fg = inst > 0
        labels = kmeans(e[:, fg].t().numpy(), int(inst.max()), seed=seed)
        scores.append(adjusted_rand_index(inst[fg].numpy(), labels))
        label_map = np.full(tuple(inst.shape), -1, dtype=np.int64)
        label_map[fg.numpy()] = labels
        maps.append(label_map)
    return scores, maps


def run_experiment(
    spec: DotsSpec = DotsSpec(),
    iters: int = 300,
    num_train: int = 64,
    num_test: int = 8,
    seed: int = 0,
    lr: float = 0.01,
) -> Tuple[Dict[str, Dict[str, float]], Dict[str, List[np.ndarray]]]:
    """Train the same network (same initial weights) with convolutional and
    semi-convolutional embeddings; cluster the test images before and after training.

    Returns:
        ``{"conv": {...}, "semiconv": {...}}`` with the first and final training loss and the
        mean / minimum ARI over the test images after training (and the mean before), and the
        cluster-label maps of the test images after training, per variant.
    """
    train = make_dots(spec, num_train, seed)
    test = make_dots(spec, num_test, seed + 1)
    out, maps = {}, {}
    for name, semi in (("conv", False), ("semiconv", True)):
        torch.manual_seed(seed)
        net = DotsEmbeddingNet(semi_conv=semi, coord_unit=float(spec.spacing))
        ari_init, _ = cluster_dots(net, *test, seed=seed)
        hist = train_embeddings(net, *train, iters=iters, lr=lr, seed=seed)
        ari, maps[name] = cluster_dots(net, *test, seed=seed)
        out[name] = {
            "loss_first": hist[0],
            "loss_last10": float(np.mean(hist[-10:])),
            "ari_mean_init": float(np.mean(ari_init)),
            "ari_mean": float(np.mean(ari)),
            "ari_min": float(np.min(ari)),
        }
    return out, maps


# ------------------------------------------------------------------------------ command line
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    d = DotsSpec()
    p.add_argument("--size", type=int, default=d.size, help="image side (pixels)")
    p.add_argument("--grid", type=int, default=d.grid, help="dots per row / column")
    p.add_argument("--spacing", type=int, default=d.spacing, help="dot pitch (pixels)")
    p.add_argument("--radius", type=float, default=d.radius, help="dot radius (pixels)")
    p.add_argument("--iters", type=int, default=300, help="SGD iterations (batch 8)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--num-train", type=int, default=64)
    p.add_argument("--num-test", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--output-dir", default="")
    return p.parse_args(argv)


def _palette(labels: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 256, size=(labels.max() + 2, 3), dtype=np.uint8)
    colours[0] = 0  # background (-1)
    return colours[labels + 1]


def save_clusters(path: str, spec: DotsSpec, maps: dict, seed: int, num: int = 3) -> None:
    from PIL import Image

    _, inst = make_dots(spec, len(maps["conv"]), seed + 1)
    rows = []
    for i in range(min(num, len(inst))):
        gt = inst[i].numpy() - 1
        row = [_palette(gt), _palette(maps["conv"][i]), _palette(maps["semiconv"][i])]
        sep = np.full((spec.size, 2, 3), 255, dtype=np.uint8)
        rows.append(np.concatenate([row[0], sep, row[1], sep, row[2]], axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).resize(
        (rows[0].shape[1] * 3, len(rows) * spec.size * 3), Image.NEAREST
    ).save(path)


def main(argv=None) -> Dict[str, Dict[str, float]]:
    """Run the experiment with the command line's settings, print the table; return the
    results of :func:`run_experiment`."""
    from instseg_d2.benchmark.machine import describe_machine, machine_line

    args = parse_args(argv)
    spec = DotsSpec(args.size, args.grid, args.spacing, args.radius)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    try:
        results, maps = run_experiment(
            spec, args.iters, args.num_train, args.num_test, args.seed, args.lr
        )
        machine = machine_line(describe_machine("cpu"))
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0
    print(f"dots: {spec}, {args.iters} iterations, {args.num_test} test images, {seconds:.0f} s")
    print(f"machine: {machine}\n")
    print("| embedding | loss first -> last | ARI before training | ARI mean | ARI min |")
    print("|---|---|---|---|---|")
    for name, label in (("conv", "convolutional Phi_u"), ("semiconv", "semi-conv Psi_u")):
        r = results[name]
        print(
            f"| {label} | {r['loss_first']:.4f} -> {r['loss_last10']:.4f} | "
            f"{r['ari_mean_init']:.3f} | {r['ari_mean']:.3f} | {r['ari_min']:.3f} |"
        )
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "results.json"), "w") as f:
            json.dump({"args": vars(args), "machine": machine, "results": results}, f, indent=1)
        save_clusters(os.path.join(args.output_dir, "clusters.png"), spec, maps, args.seed)
    return results


if __name__ == "__main__":
    main()
