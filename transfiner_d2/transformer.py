"""The refinement transformer of Mask Transfiner (paper Sec. 3.4) and its position embedding."""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def sine_position_embedding(
    size: int, dim: int, temperature: float = 10000.0, device=None, dtype=torch.float32
) -> torch.Tensor:
    """2-D sine/cosine embedding of the cells of a ``size x size`` grid (DETR style).

    Row ``i`` and column ``j`` are normalised to ``(i + 1) / size * 2 pi``. The first ``dim/2``
    channels encode the row, the last ``dim/2`` the column, each as
    ``[sin(p / t_0), cos(p / t_0), sin(p / t_2), cos(p / t_2), ...]`` with
    ``t_k = temperature ** (2 * (k // 2) / (dim / 2))`` (the layout of the reference weights).

    Returns:
        (size * size, dim), row-major cells.
    """
    if dim % 4 != 0:
        raise ValueError(f"position embedding: dim must be a multiple of 4, got {dim}")
    half = dim // 2
    coords = torch.arange(1, size + 1, device=device, dtype=torch.float32)
    coords = coords / (size + 1e-6) * (2 * math.pi)
    k = torch.arange(half, device=device, dtype=torch.float32)
    t = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / half)
    p = coords[:, None] / t  # (size, half)
    enc = torch.stack([p[:, 0::2].sin(), p[:, 1::2].cos()], dim=2).flatten(1)  # (size, half)
    pos_y = enc[:, None, :].expand(size, size, half)
    pos_x = enc[None, :, :].expand(size, size, half)
    return torch.cat([pos_y, pos_x], dim=2).reshape(size * size, dim).to(dtype)


# Attention scores of one F.scaled_dot_product_attention call: at most this many elements
# (heads x queries x keys; 2^26 floats = 256 MB). Larger: one call per instance and block of
# queries. (torch's fused CPU kernel is itself memory-bounded; query blocks of fewer than
# ~1,000 cost it ~10 % more time, hence the generous bound.)
MAX_SCORES = 2**26


def blocked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask, dropout: float, max_scores: int
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` with at most ``max_scores`` scores per call.

    Args:
        q, k, v: (B, H, T, D).
        mask: (B, 1, 1, T) bool, True for keys to attend to, or None.

    Returns:
        (B, H, T, D). Above the bound, every instance goes alone, its queries in blocks (each
        query's output depends on its own scores only, so the result is the same).
    """
    b, h, t, _ = q.shape
    if b * h * t * t <= max_scores:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    block = max(1, max_scores // (h * t))
    out = torch.empty_like(q)
    for i in range(b):
        m = None if mask is None else mask[i : i + 1]
        for j in range(0, t, block):
            out[i : i + 1, :, j : j + block] = F.scaled_dot_product_attention(
                q[i : i + 1, :, j : j + block], k[i : i + 1], v[i : i + 1], m, dropout
            )
    return out


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameters and maths
    (``in_proj_weight``/``in_proj_bias`` for q, k, v; ``out_proj``), computed with
    ``F.scaled_dot_product_attention``.

    Memory is bounded (:func:`blocked_attention`): one attention call forms at most
    ``max_scores`` scores, whichever kernel torch picks."""

    def __init__(self, dim: int, nheads: int, dropout: float = 0.0, max_scores: int = MAX_SCORES):
        super().__init__()
        if dim % nheads != 0:
            raise ValueError(f"MODEL.TRANSFINER.DIM ({dim}) must be divisible by NHEADS ({nheads})")
        self.nheads = nheads
        self.dropout = dropout
        self.max_scores = max_scores
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, qk: torch.Tensor, v: torch.Tensor, padding_mask: Optional[torch.Tensor]):
        """qk: (B, T, dim) queries = keys; v: (B, T, dim) values; padding_mask: (B, T) or None."""
        b, t, d = v.shape
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)

        def heads(x):
            return x.view(b, t, self.nheads, d // self.nheads).transpose(1, 2)

        q, k, v = (
            heads(F.linear(qk, w_q, b_q)),
            heads(F.linear(qk, w_k, b_k)),
            heads(F.linear(v, w_v, b_v)),
        )
        mask = None if padding_mask is None else ~padding_mask[:, None, None, :]
        dropout = self.dropout if self.training else 0.0
        out = blocked_attention(q, k, v, mask, dropout, self.max_scores)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class RefinementLayer(nn.Module):
    """Post-norm transformer encoder layer whose queries and keys (not values) get ``pos``."""

    def __init__(
        self,
        dim: int,
        nheads: int,
        ffn_dim: int,
        dropout: float,
        attn_dropout: float,
        max_scores: int = MAX_SCORES,
    ):
        super().__init__()
        self.self_attn = SelfAttention(dim, nheads, attn_dropout, max_scores)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor, padding_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """x, pos: (B, T, dim); padding_mask: (B, T) bool, True for padding tokens."""
        x = self.norm1(x + self.dropout1(self.self_attn(x + pos, x, padding_mask)))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return self.norm2(x + self.dropout2(ffn))


class RefinementTransformer(nn.Module):
    """Predicts the foreground probability of every token (context token or quadtree node).

    A token is ``[RoI feature (C) || coarse mask probability (1)]``; a linear layer fuses it to
    ``dim`` channels, ``num_layers`` encoder layers run over all tokens of an instance, and an
    MLP (dim -> dim -> 1, ReLU) with a sigmoid gives the refined probability.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        dim: int = 256,
        nheads: int = 4,
        ffn_dim: int = 2048,
        num_layers: int = 3,
        dropout: float = 0.1,
        attn_dropout: Optional[float] = None,
        pos_temperature: float = 10000.0,
        max_scores: int = MAX_SCORES,
    ):
        """``attn_dropout`` (dropout of the attention weights) defaults to ``dropout``;
        ``max_scores``: see :class:`SelfAttention`."""
        super().__init__()
        attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.dim = dim
        self.pos_temperature = pos_temperature
        self.input_proj = nn.Linear(in_channels + 1, dim)
        self.layers = nn.ModuleList(
            RefinementLayer(dim, nheads, ffn_dim, dropout, attn_dropout, max_scores)
            for _ in range(num_layers)
        )
        self.output_fc1 = nn.Linear(dim, dim)
        self.output_fc2 = nn.Linear(dim, 1)
        for p in self.parameters():  # the reference's init: xavier on every matrix
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def position_embedding(self, size: int, device, dtype) -> torch.Tensor:
        """(size * size, dim) embedding of a size x size grid of cells."""
        return sine_position_embedding(size, self.dim, self.pos_temperature, device, dtype)

    def forward(
        self,
        feats: torch.Tensor,
        probs: torch.Tensor,
        pos: torch.Tensor,
        padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            feats: (B, T, C) token features.
            probs: (B, T) coarse mask probability of each token.
            pos: (B, T, dim) position embeddings.
            padding_mask: (B, T) bool, True for padding (ignored as keys), or None.

        Returns:
            (B, T) refined foreground probabilities.
        """
        x = self.input_proj(torch.cat([feats, probs.unsqueeze(-1).to(feats.dtype)], dim=-1))
        for layer in self.layers:
            x = layer(x, pos.to(x.dtype), padding_mask)
        return self.output_fc2(F.relu(self.output_fc1(x))).squeeze(-1).sigmoid()
