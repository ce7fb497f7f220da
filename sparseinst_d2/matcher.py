"""Bipartite matching of predictions to objects (paper Sec. 3.4, Eq. 2).

The matching score of prediction i and object k is
``C(i, k) = DICE(m_i, t_k)^alpha * p_i(c_k)^beta`` (alpha 0.8, beta 0.2); the Hungarian
algorithm (``scipy.optimize.linear_sum_assignment``, maximising) picks the one-to-one
assignment of highest total score per image. Unmatched predictions are background.
"""

from typing import List, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn


def pairwise_dice(probs: torch.Tensor, targets: torch.Tensor, eps: float) -> torch.Tensor:
    """Dice coefficient of every prediction with every target.

    Args:
        probs: (N, P) mask probabilities (P pixels).
        targets: (K, P) targets in [0, 1].
        eps: smoothing of the denominator.

    Returns:
        (N, K): ``2 p_i . t_k / (|p_i|^2 + |t_k|^2 + eps)``.
    """
    inter = probs @ targets.t()
    sq = (probs * probs).sum(-1)[:, None] + (targets * targets).sum(-1)[None, :]
    return 2 * inter / (sq + eps)


class SparseInstMatcher(nn.Module):
    """Hungarian matching on ``dice^alpha * prob^beta``, one image at a time."""

    def __init__(self, alpha: float = 0.8, beta: float = 0.2, dice_eps: float = 1e-4):
        super().__init__()
        self.alpha, self.beta, self.dice_eps = alpha, beta, dice_eps

    def score_matrix(
        self, mask_logits: torch.Tensor, cls_logits: torch.Tensor, targets: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """The matching scores of one image.

        Args:
            mask_logits: (N, h, w) predicted mask logits.
            cls_logits: (N, K) class logits.
            targets: (G, h, w) target masks at the prediction's resolution.
            labels: (G,) target classes.

        Returns:
            (N, G) float32 scores C(i, k).
        """
        probs = mask_logits.float().flatten(1).sigmoid()
        dice = pairwise_dice(probs, targets.float().flatten(1), self.dice_eps)
        prob = cls_logits.float().sigmoid()[:, labels]
        return dice.pow(self.alpha) * prob.pow(self.beta)

    @torch.no_grad()
    def forward(
        self,
        mask_logits: torch.Tensor,
        cls_logits: torch.Tensor,
        targets: List[torch.Tensor],
        labels: List[torch.Tensor],
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            mask_logits: (B, N, h, w).
            cls_logits: (B, N, K).
            targets: per image (G_b, h, w) target masks at the prediction's resolution.
            labels: per image (G_b,) int64 classes.

        Returns:
            per image ``(pred_idx, tgt_idx)``, two int64 CPU tensors of length min(N, G_b):
            prediction ``pred_idx[j]`` is matched to target ``tgt_idx[j]``.
        """
        with torch.autocast(mask_logits.device.type, enabled=False):
            out = []
            for m, c, t, lab in zip(mask_logits, cls_logits, targets, labels):
                if len(lab) == 0:
                    empty = torch.zeros(0, dtype=torch.int64)
                    out.append((empty, empty.clone()))
                    continue
                scores = self.score_matrix(m, c, t, lab).cpu()
                rows, cols = linear_sum_assignment(scores.numpy(), maximize=True)
                out.append((torch.as_tensor(rows, dtype=torch.int64),
                            torch.as_tensor(cols, dtype=torch.int64)))  # fmt: skip
        return out
