"""Gradient scaling: identity in the forward pass, scaled gradient in the backward pass."""

import torch


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Return ``x`` unchanged; the gradient flowing back through it is multiplied by ``factor``.

    Used where a branch must learn from shared features without perturbing them much (e.g. the
    semi-convolutional embedding subnet scales its gradient into the FPN by 0.1). ``factor=1``
    returns ``x`` itself; ``factor=0`` is a ``detach``.

    Args:
        x: any tensor.
        factor: multiplier of the gradient, >= 0.
    """
    factor = float(factor)
    if factor < 0:
        raise ValueError(f"scale_gradient: factor must be >= 0, got {factor}")
    if factor == 1.0 or not x.requires_grad:
        return x
    if factor == 0.0:
        return x.detach()
    return _ScaleGradient.apply(x, factor)
