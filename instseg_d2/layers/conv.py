"""Small convolution blocks shared by several methods."""

from detectron2.layers import get_norm
from torch import nn


def conv_norm_relu(
    in_channels: int, out_channels: int, kernel_size: int = 3, norm: str = "BN"
) -> nn.Sequential:
    """``Sequential(conv, norm, ReLU)`` (``Sequential(conv, ReLU)`` without norm).

    The conv has "same" padding, a bias only without norm, and Caffe2's XavierFill init
    (``kaiming_uniform_(a=1)``), as the mask branches of CondInst and BlendMask; the module
    indices (0 = conv, 1 = norm) are those of their published checkpoints.

    Args:
        norm: anything :func:`detectron2.layers.get_norm` takes ("BN", "SyncBN", "GN", ...),
            or "" / "none" for no norm.
    """
    norm = "" if norm in (None, "none") else norm
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=not norm
    )
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if not norm:
        nn.init.constant_(conv.bias, 0)
        return nn.Sequential(conv, nn.ReLU(inplace=True))
    return nn.Sequential(conv, get_norm(norm, out_channels), nn.ReLU(inplace=True))
