"""CondInst's dynamic mask head: per-instance 1x1 convs whose filters come from the controller."""

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from instseg_d2.layers import aligned_bilinear, compute_locations


def dynamic_param_counts(
    in_channels: int, channels: int, num_layers: int, use_rel_coords: bool = True
) -> Tuple[List[int], List[int]]:
    """Numbers of weights and biases of each layer of the dynamic head.

    Layer 0 maps ``in_channels`` (+2 relative coordinates) to ``channels``, middle layers
    ``channels`` to ``channels``, the last one ``channels`` to 1 mask logit. CondInst
    (8 input channels, 3 layers of 8): weights [80, 64, 8] + biases [8, 8, 1] = 169.
    """
    if num_layers < 1:
        raise ValueError(f"MODEL.CONDINST.MASK_HEAD.NUM_LAYERS must be >= 1, got {num_layers}")
    cin = in_channels + (2 if use_rel_coords else 0)
    weights, biases = [], []
    for i in range(num_layers):
        cout = 1 if i == num_layers - 1 else channels
        weights.append(cin * cout)
        biases.append(cout)
        cin = cout
    return weights, biases


class DynamicMaskHead(nn.Module):
    """Runs the instance-specific mask FCN of every instance at once (grouped 1x1 convs).

    Input of instance i: its image's F_mask (``in_channels`` at stride ``s``) with, in front,
    the relative coordinates ``(location_i - pixel) / soi[level_i]`` (``soi`` = the FCOS sizes
    of interest plus twice the last one). Output: one mask logit per pixel, upsampled with
    aligned bilinear from stride ``s`` to ``mask_out_stride``. No parameters of its own.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int = 8,
        channels: int = 8,
        num_layers: int = 3,
        use_rel_coords: bool = True,
        sizes_of_interest: Sequence[float] = (64, 128, 256, 512),
        mask_out_stride: int = 4,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.channels = channels
        self.use_rel_coords = use_rel_coords
        self.mask_out_stride = mask_out_stride
        self.weight_nums, self.bias_nums = dynamic_param_counts(
            in_channels, channels, num_layers, use_rel_coords
        )
        self.num_gen_params = sum(self.weight_nums) + sum(self.bias_nums)
        soi = [float(s) for s in sizes_of_interest]
        self.register_buffer("sizes_of_interest", torch.tensor(soi + [soi[-1] * 2]), False)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.CONDINST
        return {
            "in_channels": c.MASK_BRANCH.OUT_CHANNELS,
            "channels": c.MASK_HEAD.CHANNELS,
            "num_layers": c.MASK_HEAD.NUM_LAYERS,
            "use_rel_coords": not c.MASK_HEAD.DISABLE_REL_COORDS,
            "sizes_of_interest": cfg.MODEL.FCOS.SIZES_OF_INTEREST,
            "mask_out_stride": c.MASK_OUT_STRIDE,
        }

    def head_inputs(self, mask_feats, mask_stride, im_inds, locations, fpn_levels) -> torch.Tensor:
        """(R, [2 +] in_channels, H, W): relative coordinates and the instance's F_mask."""
        n, c, h, w = mask_feats.shape
        feats = mask_feats[im_inds]
        if not self.use_rel_coords:
            return feats
        pix = compute_locations(h, w, mask_stride, device=mask_feats.device)  # (HW, 2)
        rel = locations[:, None, :] - pix[None]  # (R, HW, 2)
        rel = rel / self.sizes_of_interest[fpn_levels][:, None, None]
        rel = rel.permute(0, 2, 1).reshape(rel.shape[0], 2, h, w).to(feats.dtype)
        return torch.cat([rel, feats], dim=1)

    def forward(
        self,
        mask_feats: torch.Tensor,
        mask_stride: int,
        im_inds: torch.Tensor,
        params: torch.Tensor,
        locations: torch.Tensor,
        fpn_levels: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            mask_feats: (N, in_channels, H, W) F_mask at stride ``mask_stride``.
            im_inds: (R,) image of each instance; params: (R, num_gen_params) its filters;
            locations: (R, 2) the FCOS location that generated them; fpn_levels: (R,).

        Returns:
            (R, 1, H * f, W * f) mask logits at ``mask_out_stride`` (f = mask_stride / that).
        """
        if mask_stride % self.mask_out_stride:
            raise ValueError(
                f"MASK_OUT_STRIDE {self.mask_out_stride} must divide the mask branch stride {mask_stride}"
            )
        if params.dim() != 2 or params.shape[1] != self.num_gen_params:
            raise ValueError(
                f"dynamic head expects (R, {self.num_gen_params}) parameters, got {tuple(params.shape)}"
            )
        x = self.head_inputs(mask_feats, mask_stride, im_inds, locations, fpn_levels)
        x = dynamic_convs(x, params, self.weight_nums, self.bias_nums)
        return aligned_bilinear(x, mask_stride // self.mask_out_stride)


@torch.jit.script_if_tracing
def dynamic_convs(
    x: torch.Tensor, params: torch.Tensor, weight_nums: List[int], bias_nums: List[int]
) -> torch.Tensor:
    """Instance i's mask FCN on its input ``x[i]``: 1x1 convs with ReLU between them, whose
    weights and biases are ``params[i]`` split by ``weight_nums + bias_nums`` (instance i's
    filters are the output channels [i*out, (i+1)*out) of one grouped conv per layer).

    Args:
        x: (R, C, H, W); params: (R, sum(weight_nums) + sum(bias_nums)).

    Returns:
        (R, 1, H, W) mask logits. Scripted when traced (R, the group count, varies).
    """
    r, h, w = x.size(0), x.size(2), x.size(3)
    if r == 0:
        return x.new_zeros((0, 1, h, w))
    chunks = torch.split(params, weight_nums + bias_nums, dim=1)
    n = len(weight_nums)
    cin = x.size(1)
    x = x.reshape(1, r * cin, h, w)
    for i in range(n):
        cout = bias_nums[i]
        weight = chunks[i].reshape(r * cout, cin, 1, 1)
        x = F.conv2d(x, weight, chunks[n + i].reshape(r * cout), groups=r)
        if i < n - 1:
            x = F.relu(x)
        cin = cout
    return x.reshape(r, 1, h, w)
