"""Steered bilateral kernel, seed selection and score fusion of semi-convolutional Mask R-CNN.

Per RoI (sec. 3.4-3.5): a seed u_s is chosen from the mask head's foreground score map s
(argmax at inference; at training the soft seed, the expectation of Psi under softmax(s)); the
kernel K_sigma(u_s, u) = exp(-||Psi_{u_s} - Psi_u|| / sigma) (eq. 9) then updates the score
to s_hat(u) = s(u) + log K_sigma(u_s, u), and the mask probability is sigmoid(s_hat).
"""

import torch

# added under the square root so that the distance has a finite gradient at 0
NORM_EPS = 1e-12


def embedding_distance(a: torch.Tensor, b: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Euclidean distance ``||a - b||`` along ``dim`` (broadcast), differentiable at 0."""
    return ((a - b).pow(2).sum(dim=dim) + NORM_EPS).sqrt()


def log_steered_bilateral_kernel(
    psi: torch.Tensor, seed: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """log K_sigma(u_s, u) = -||Psi_{u_s} - Psi_u|| / sigma (eq. 9, Laplacian kernel).

    Args:
        psi: (R, D, M, M) embeddings of the RoI bins.
        seed: (R, D) seed embedding of each RoI.
        sigma: positive scalar tensor.

    Returns:
        (R, M, M) log-kernel values (<= 0).
    """
    return -embedding_distance(psi, seed[:, :, None, None]) / sigma


def soft_seed(psi: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Training seed: E[Psi_u] under p_s = softmax(s) over the RoI's bins.

    Args:
        psi: (R, D, M, M); scores: (R, M, M) foreground logits s.

    Returns:
        (R, D).
    """
    p = scores.flatten(1).softmax(dim=1)  # (R, M*M)
    return torch.einsum("rp,rdp->rd", p, psi.flatten(2))


def hard_seed(psi: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Inference seed: Psi at u_s = argmax_u s(u) (the first one on ties).

    Args:
        psi: (R, D, M, M); scores: (R, M, M).

    Returns:
        (R, D).
    """
    idx = scores.flatten(1).argmax(dim=1)  # (R,)
    flat = psi.flatten(2)  # (R, D, M*M)
    return flat.gather(2, idx[:, None, None].expand(-1, flat.shape[1], 1)).squeeze(2)


def fuse_scores(scores: torch.Tensor, log_kernel: torch.Tensor) -> torch.Tensor:
    """s_hat(u) = s(u) + log K_sigma(u_s, u), in log space for numerical stability."""
    return scores + log_kernel
