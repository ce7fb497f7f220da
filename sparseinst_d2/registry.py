"""The local registries of SparseInst's variants (encoders, IAM decoders)."""

from detectron2.utils.registry import Registry

SPARSEINST_ENCODER_REGISTRY = Registry("SPARSEINST_ENCODER")
SPARSEINST_ENCODER_REGISTRY.__doc__ = """
Registry for SparseInst encoders: ``cls(cfg, input_shape)`` via ``from_config``, called with the
backbone's output shapes; ``forward(features: Dict[str, Tensor]) -> Tensor`` (B, C, H/8, W/8).
"""

SPARSEINST_DECODER_REGISTRY = Registry("SPARSEINST_DECODER")
SPARSEINST_DECODER_REGISTRY.__doc__ = """
Registry for SparseInst decoders: ``cls(cfg, in_channels)`` via ``from_config``;
``forward(features (B, C, H, W)) -> dict`` of ``pred_logits`` (B, N, K), ``pred_masks``
(B, N, s*H, s*W), ``pred_objectness`` (B, N, 1) and ``pred_iam`` (B, N*G, H, W).
"""


def lookup(registry: Registry, name: str, key: str):
    """``registry.get(name)``, or a KeyError naming the config ``key`` and the choices."""
    if name not in registry:
        raise KeyError(
            f"{key}={name!r} is not registered; " f"registered: {sorted(k for k, _ in registry)}"
        )
    return registry.get(name)
