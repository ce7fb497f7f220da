"""The semi-convolutional embedding subnet, shared by all FPN levels (sec. 3.1 and 3.5)."""

from typing import Dict, List, Sequence

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from torch import nn

from instseg_d2.layers import compute_locations, scale_gradient


def pixel_coordinates(
    h: int, w: int, stride: int, unit: float, device=None, dtype=torch.float32
) -> torch.Tensor:
    """The position u of every cell of an (h, w) map of the given stride, in units of ``unit``.

    Cell (i, j) is the image pixel centre ``((j + 0.5) * stride, (i + 0.5) * stride)`` for the
    even FPN strides (``compute_locations``), the point that RoIAlign (aligned=True) samples
    there, so that u cropped by RoIAlign is the image position of each RoI bin.

    Returns:
        (2, h, w): channel 0 is x / unit, channel 1 is y / unit.
    """
    loc = compute_locations(h, w, stride, device=device).to(dtype)
    return (loc / unit).t().reshape(2, h, w)


def add_pixel_coordinates(phi: torch.Tensor, stride: int, unit: float) -> torch.Tensor:
    """Eq. 3: Psi_u = Phi_u + u on the first two channels; the others are left as they are.

    Args:
        phi: (N, D, H, W) convolutional embeddings, D >= 2.

    Returns:
        (N, D, H, W) semi-convolutional embeddings.
    """
    if phi.dim() != 4 or phi.shape[1] < 2:
        raise ValueError(f"add_pixel_coordinates expects (N, D>=2, H, W), got {tuple(phi.shape)}")
    u = pixel_coordinates(*phi.shape[2:], stride, unit, device=phi.device, dtype=phi.dtype)
    return torch.cat([phi[:, :2] + u, phi[:, 2:]], dim=1)


class SemiConvEmbeddingHead(nn.Module):
    """1x1 conv + ReLU + 3x3 conv to D dims, applied to every FPN level with shared weights.

    The gradient it sends into the FPN tensors is scaled by ``grad_scale`` (0.1 in the paper);
    its own parameters get their full gradient. With ``semi_conv`` the pixel position u (in
    image pixels / ``coord_unit``) is added to the first two output channels.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        strides: Sequence[int],
        hidden_dim: int = 256,
        embed_dim: int = 8,
        grad_scale: float = 0.1,
        semi_conv: bool = True,
        coord_unit: float = 64.0,
    ):
        """
        Args:
            in_channels: channels of the FPN features.
            strides: stride of each input level, in the order of the features given to forward.
            hidden_dim, embed_dim: width of the 1x1 conv and D, the embedding dimension.
            grad_scale: factor on the gradient into the input features (MODEL.SEMICONV.GRAD_SCALE).
            semi_conv: add u to the first two channels (eq. 3).
            coord_unit: image pixels per unit of u.
        """
        super().__init__()
        if semi_conv and embed_dim < 2:
            raise ValueError(
                f"MODEL.SEMICONV.EMBED_DIM={embed_dim}: semi-convolutional embeddings need >= 2"
            )
        if grad_scale < 0:
            raise ValueError(f"MODEL.SEMICONV.GRAD_SCALE={grad_scale} must be >= 0")
        if coord_unit <= 0:
            raise ValueError(f"MODEL.SEMICONV.COORD_UNIT={coord_unit} must be > 0")
        self.strides = [int(s) for s in strides]
        self.grad_scale = float(grad_scale)
        self.semi_conv = bool(semi_conv)
        self.coord_unit = float(coord_unit)
        self.embed_dim = int(embed_dim)
        self.hidden = Conv2d(in_channels, hidden_dim, kernel_size=1, activation=nn.ReLU())
        self.predictor = Conv2d(hidden_dim, embed_dim, kernel_size=3, padding=1)
        weight_init.c2_msra_fill(self.hidden)
        # small output at the start: Psi ~ u, i.e. the kernel starts as a spatial Laplacian
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.constant_(self.predictor.bias, 0.0)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(f"SemiConvEmbeddingHead: levels {in_features} differ in channels")
        return {
            "in_channels": channels.pop(),
            "strides": [input_shape[f].stride for f in in_features],
            "hidden_dim": cfg.MODEL.SEMICONV.HIDDEN_DIM,
            "embed_dim": cfg.MODEL.SEMICONV.EMBED_DIM,
            "grad_scale": cfg.MODEL.SEMICONV.GRAD_SCALE,
            "semi_conv": cfg.MODEL.SEMICONV.SEMI_CONV,
            "coord_unit": cfg.MODEL.SEMICONV.COORD_UNIT,
        }

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """
        Args:
            features: one (N, C, H_l, W_l) tensor per level, in the order of ``strides``.

        Returns:
            one (N, D, H_l, W_l) embedding map per level (Psi, or Phi without ``semi_conv``).
        """
        if len(features) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} levels, got {len(features)}")
        out = []
        for x, stride in zip(features, self.strides):
            phi = self.predictor(self.hidden(scale_gradient(x, self.grad_scale)))
            out.append(
                add_pixel_coordinates(phi, stride, self.coord_unit) if self.semi_conv else phi
            )
        return out
