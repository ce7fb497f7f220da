"""Quadtree refinement (paper Sec. 3.3-3.4): tokens of the context grid and of the incoherent
quadtree nodes go through the refinement transformer, for a batch of instances at once.

Tokens of an instance: the P x P (14 x 14) RoI features as context, then the nodes of each level
(28 / 56 / 112). A token's input is its RoI feature (pooled at its level's resolution) and the
coarse mask probability at that cell (bilinearly resized to the level); its position
embedding is the sine embedding of its cell in its level's grid.
"""

from typing import Callable, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from torch import nn

from .losses import refine_loss
from .quadtree import all_nodes, gather_cells, node_masks, sample_train_nodes
from .transformer import RefinementTransformer

# node_features(level, box_inds (R,), cells (R, M)) -> (R, M, C) RoI features of those cells
NodeFeatures = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def resize_probs(probs: torch.Tensor, size: int, align_corners: bool = False) -> torch.Tensor:
    """(R, S, S) -> (R, size, size), bilinear."""
    if probs.shape[-1] == size:
        return probs
    out = F.interpolate(probs[:, None], (size, size), mode="bilinear", align_corners=align_corners)
    return out[:, 0]


# Inference: instances batched together are padded by at most this share of the longest's tokens
MAX_PADDING = 0.1


def length_groups(lengths: torch.Tensor, max_size: int, max_padding: float) -> List[torch.Tensor]:
    """Groups of instances of similar token counts, for batched attention with little padding.

    Instances are taken longest first; a group is the longest remaining instance and the next
    ones, at most ``max_size`` in all, of at least ``(1 - max_padding)`` times its length.

    Args:
        lengths: (R,) token count of every instance.

    Returns:
        index tensors (into R) of the groups; together they hold every instance once.
    """
    order = torch.argsort(lengths, descending=True, stable=True)
    n, sorted_lengths = len(order), lengths[order].tolist()
    groups, start = [], 0
    while start < n:
        end = start + 1
        floor = (1.0 - max_padding) * sorted_lengths[start]
        while end < n and end - start < max_size and sorted_lengths[end] >= floor:
            end += 1
        groups.append(order[start:end])
        start = end
    return groups


class QuadtreeRefiner(nn.Module):
    """Node selection + refinement transformer; see the module docstring."""

    @configurable
    def __init__(
        self,
        transformer: RefinementTransformer,
        *,
        depth: int = 3,
        train_thresholds=(0.125, 0.5, 0.5),
        test_thresholds=(1e-6, 0.125, 0.8),
        train_nodes_per_level: int = 150,
        train_min_nodes: int = 10,
        test_chunk_size: int = 10,
    ):
        """
        Args:
            transformer: predicts the probability of every token.
            depth: number of quadtree levels (28, 56, 112 for 3).
            train_thresholds, test_thresholds: incoherence threshold of every level.
            train_nodes_per_level: nodes drawn per level and instance in training.
            train_min_nodes: instances with fewer nodes at any level are not refined (training).
            test_chunk_size: instances per transformer call at inference.
        """
        super().__init__()
        for name, th in (("TRAIN", train_thresholds), ("TEST", test_thresholds)):
            if len(th) != depth:
                raise ValueError(
                    f"MODEL.TRANSFINER.{name}_INCOHERENT_THRESH has {len(th)} values, "
                    f"MODEL.TRANSFINER.QUADTREE_DEPTH is {depth}"
                )
        if test_chunk_size < 1:
            raise ValueError(
                f"MODEL.TRANSFINER.TEST_CHUNK_SIZE must be >= 1, got {test_chunk_size}"
            )
        self.transformer = transformer
        self.depth = depth
        self.train_thresholds = list(train_thresholds)
        self.test_thresholds = list(test_thresholds)
        self.train_nodes_per_level = train_nodes_per_level
        self.train_min_nodes = train_min_nodes
        self.test_chunk_size = test_chunk_size

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        T = cfg.MODEL.TRANSFINER
        transformer = RefinementTransformer(
            input_shape.channels, dim=T.DIM, nheads=T.NHEADS, ffn_dim=T.FFN_DIM,
            num_layers=T.NUM_LAYERS, dropout=T.DROPOUT, attn_dropout=T.ATTN_DROPOUT,
            pos_temperature=T.POS_TEMPERATURE,
        )  # fmt: skip
        return {
            "transformer": transformer,
            "depth": T.QUADTREE_DEPTH,
            "train_thresholds": list(T.TRAIN_INCOHERENT_THRESH),
            "test_thresholds": list(T.TEST_INCOHERENT_THRESH),
            "train_nodes_per_level": T.TRAIN_NODES_PER_LEVEL,
            "train_min_nodes": T.TRAIN_MIN_NODES,
            "test_chunk_size": T.TEST_CHUNK_SIZE,
        }

    def level_sizes(self, coarse_size: int) -> List[int]:
        """Side of every quadtree level: coarse_size * 2^l."""
        return [coarse_size * 2**level for level in range(self.depth)]

    def _tokens(self, probs, roi, inds, node_features: NodeFeatures, cells):
        """Tokens of R boxes: the P x P context cells, then the given cells of every level.

        Args:
            probs: (R, S0, S0) coarse mask probabilities.
            roi: (R, C, P, P) RoI features of these boxes.
            inds: (R,) their indices among all boxes (for ``node_features``).
            cells: per level, (R, M_l) cell indices (an empty list: context only).

        Returns:
            features (R, T, C), coarse probabilities (R, T), positions (R, T, D), with
            T = P * P + sum of M_l.
        """
        r, p = probs.shape[0], roi.shape[-1]
        sizes = [p] + self.level_sizes(probs.shape[-1])

        def pos(size):
            return self.transformer.position_embedding(size, roi.device, roi.dtype)

        feats = [roi.flatten(2).transpose(1, 2)]
        tok_probs = [resize_probs(probs, p).flatten(1)]
        tok_pos = [pos(p).expand(r, -1, -1)]
        for level, (size, idx) in enumerate(zip(sizes[1:], cells)):
            feats.append(node_features(level, inds, idx))
            tok_probs.append(gather_cells(resize_probs(probs, size), idx))
            tok_pos.append(pos(size)[idx])
        return torch.cat(feats, 1), torch.cat(tok_probs, 1), torch.cat(tok_pos, 1)

    # ------------------------------------------------------------------------------ training
    def training_loss(
        self,
        probs: torch.Tensor,
        incoherence: torch.Tensor,
        roi: torch.Tensor,
        inds: torch.Tensor,
        node_features: NodeFeatures,
        crop_gt: Callable[[int, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """L1 refinement loss of R instances.

        Args:
            probs: (R, S0, S0) coarse mask probabilities of the GT class (detached).
            incoherence: (R, S0, S0) predicted incoherence probabilities (detached).
            roi: (N, C, P, P) RoI features of all boxes (context tokens).
            inds: (R,) the boxes to refine, indices into N.
            node_features: ``node_features(level, box_inds, cells)`` -> (len(box_inds), M, C).
            crop_gt: ``crop_gt(size, sel)`` gives the (len(sel), size, size) GT masks of the
                instances ``sel`` (indices into R) cropped to their boxes.

        Returns:
            scalar. Instances with too few nodes at some level are left out; when no instance
            has enough, the context tokens of all R instances are refined (as the reference).
        """
        r = probs.shape[0]
        if r == 0:
            return sum(p.sum() for p in self.transformer.parameters()) * 0.0
        sizes = self.level_sizes(probs.shape[-1])
        masks = node_masks(incoherence, sizes, self.train_thresholds)
        index, valid = sample_train_nodes(masks, self.train_nodes_per_level, self.train_min_nodes)
        p = roi.shape[-1]
        sel = valid.nonzero()[:, 0]
        if len(sel) == 0:
            sel = torch.arange(r, device=probs.device)
            pred = self.transformer(*self._tokens(probs, roi[inds], inds, node_features, []))
            return refine_loss(pred, crop_gt(p, sel).flatten(1))
        cells = [idx[sel] for idx in index]
        pred = self.transformer(
            *self._tokens(probs[sel], roi[inds[sel]], inds[sel], node_features, cells)
        )
        labels = [crop_gt(p, sel).flatten(1)]
        labels += [gather_cells(crop_gt(s, sel), idx) for s, idx in zip(sizes, cells)]
        return refine_loss(pred, torch.cat(labels, 1))

    # ----------------------------------------------------------------------------- inference
    def _groups(self, lengths: torch.Tensor) -> List[torch.Tensor]:
        """``length_groups`` of the R instances; one group of all when traced (a trace cannot
        loop a data-dependent number of times; the padding is masked, so the masks are the
        same, at the cost of more padding)."""
        if torch.jit.is_tracing():
            return [torch.arange(lengths.shape[0], device=lengths.device)]
        return length_groups(lengths, self.test_chunk_size, MAX_PADDING)

    @torch.no_grad()
    def inference(self, probs, incoherence, roi, inds, node_features: NodeFeatures) -> torch.Tensor:
        """Refined masks of R instances.

        Every node above the test threshold of its level is refined. The coarse probabilities
        get the refined values at level 0, are upsampled 2x (bilinear, align_corners=True),
        get the level-1 values, and so on.

        Each instance's tokens (its context and all its nodes) attend to each other only, as
        in the reference's loop over instances. For speed, instances of similar token counts
        go through the transformer together (:func:`length_groups`: at most
        ``test_chunk_size`` per call, padded to the longest of their group, which adds at
        most ``MAX_PADDING`` of its tokens); the padding is masked, so the masks are those of
        refining each instance alone.

        Args:
            probs: (R, S0, S0) coarse mask probabilities of the predicted class.
            incoherence: (R, S0, S0) incoherence probabilities.
            roi, inds, node_features: as :meth:`training_loss`.

        Returns:
            (R, S, S) foreground probabilities, S = S0 * 2^(depth-1).
        """
        r = probs.shape[0]
        sizes = self.level_sizes(probs.shape[-1])
        is_node = node_masks(incoherence, sizes, self.test_thresholds)  # per level (R, S_l^2)
        counts = torch.stack([m.sum(1) for m in is_node], 1)  # (R, depth)
        if not torch.jit.is_tracing():  # for transfiner_d2.timing: refined instances, nodes/level
            self.last_nodes = (r, counts.sum(0).tolist())
        num_ctx = roi.shape[-1] ** 2
        refined = [probs.new_zeros(m.shape) for m in is_node]  # values of the node cells
        for group in self._groups(num_ctx + counts.sum(1)):
            selected = [all_nodes(m[group]) for m in is_node]
            cells = [idx for idx, _ in selected]
            tokens = self._tokens(probs[group], roi[inds[group]], inds[group], node_features, cells)
            pad = None
            if torch.jit.is_tracing() or not all(bool(v.all()) for _, v in selected):
                pad = torch.cat([tokens[1].new_zeros(group.shape[0], num_ctx, dtype=torch.bool)]
                                + [~valid for _, valid in selected], 1)  # fmt: skip
            out = self.transformer(*tokens, pad)[:, num_ctx:]
            outs = out.split([c.shape[1] for c in cells], 1)
            for level, (o, (idx, valid)) in enumerate(zip(outs, selected)):
                rows, cols = valid.nonzero(as_tuple=True)
                refined[level][group[rows], idx[rows, cols]] = o[rows, cols].to(probs.dtype)

        masks = probs
        for level, (nodes, values) in enumerate(zip(is_node, refined)):
            if level > 0:
                masks = resize_probs(masks, sizes[level], align_corners=True)
            flat = torch.where(nodes, values, masks.flatten(1))
            masks = flat.view(r, sizes[level], sizes[level])
        return masks
