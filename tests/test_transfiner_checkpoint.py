"""The reference Mask Transfiner checkpoint (SysCV/transfiner R-50-FPN 1x) loads into our model.

The reference model is detectron2 v0.5's Mask R-CNN R-50-FPN with an edited mask head and
pooler; its Mask R-CNN parameters keep detectron2's names (taken here from a stock detectron2
Mask R-CNN), its Transfiner parameters are listed below with the shapes its code gives them
(detectron2/modeling/roi_heads/mask_head.py: MaskRCNNConvUpsampleHead.__init__ and
TransformerEncoder(Layer); detectron2/modeling/poolers.py: ROIPooler.conv_norm_relus_semantic).
"""

import os

import pytest
import torch
from detectron2.modeling import build_model

from instseg_d2.engine import InstSegCheckpointer, build_config
from transfiner_d2.checkpoint import convert_reference_state_dict

C, K = 256, 80  # FPN / mask-head channels, COCO classes


def reference_transfiner_shapes():
    """Names (under ``roi_heads.``) and shapes of the reference's Transfiner parameters."""
    shapes = {}
    for i in (0, 2, 4, 6):  # nn.Sequential(conv, relu, conv, relu, conv, relu, conv)
        shapes[f"mask_pooler.conv_norm_relus_semantic.{i}.weight"] = (C, C, 3, 3)
        shapes[f"mask_pooler.conv_norm_relus_semantic.{i}.bias"] = (C,)
    head = {
        "deconv_bo.weight": (C, C, 2, 2), "deconv_bo.bias": (C,),
        "predictor_bo.weight": (1, C, 1, 1), "predictor_bo.bias": (1,),
        "deconv_uncertain.weight": (128, 128, 2, 2), "deconv_uncertain.bias": (128,),
        "predictor_uncertain.weight": (1, 128, 1, 1), "predictor_uncertain.bias": (1,),
        "predictor_semantic_s.weight": (1, C, 1, 1), "predictor_semantic_s.bias": (1,),
        "encoder.conv_fuse.weight": (C, C + 1, 1, 1), "encoder.conv_fuse.bias": (C,),
        "encoder.conv_r1.0.weight": (C, C, 1, 1), "encoder.conv_r1.0.bias": (C,),
        "encoder.conv_r1.2.weight": (1, C, 1, 1), "encoder.conv_r1.2.bias": (1,),
    }  # fmt: skip
    for k, out in enumerate((C, C, C, 128)):  # the 4th uncertain conv has 128 outputs
        head[f"mask_fcn_uncertain{k + 1}.weight"] = (out, C, 3, 3)
        head[f"mask_fcn_uncertain{k + 1}.bias"] = (out,)
    for i in range(3):  # TransformerEncoderLayer(d_model=256, nhead=4), dim_feedforward 2048
        p = f"encoder.layers.{i}."
        head.update({
            p + "self_attn.in_proj_weight": (3 * C, C), p + "self_attn.in_proj_bias": (3 * C,),
            p + "self_attn.out_proj.weight": (C, C), p + "self_attn.out_proj.bias": (C,),
            p + "linear1.weight": (2048, C), p + "linear1.bias": (2048,),
            p + "linear2.weight": (C, 2048), p + "linear2.bias": (C,),
            p + "norm1.weight": (C,), p + "norm1.bias": (C,),
            p + "norm2.weight": (C,), p + "norm2.bias": (C,),
        })  # fmt: skip
    shapes.update({f"mask_head.{k}": v for k, v in head.items()})
    return shapes


@pytest.fixture(scope="module")
def models(repo_root):
    torch.manual_seed(0)
    mrcnn = build_model(
        build_config(os.path.join(repo_root, "configs/MaskRCNN/MaskRCNN_R_50_1x.yaml"))
    )
    cfg = build_config(os.path.join(repo_root, "configs/Transfiner/Transfiner_R_50_1x.yaml"))
    return mrcnn, build_model(cfg), cfg


@pytest.fixture(scope="module")
def reference_state_dict(models):
    mrcnn, _, _ = models
    sd = {k: torch.randn(v.shape) for k, v in mrcnn.state_dict().items()}  # detectron2's names
    for k, shape in reference_transfiner_shapes().items():
        sd["roi_heads." + k] = torch.randn(shape)
    return sd


def test_reference_checkpoint_file_loads_in_strict_mode(
    models, reference_state_dict, tmp_path, checkpoint_log
):
    # the path of MODEL.WEIGHTS with --eval-only: a reference .pth, strict checkpointer
    _, model, _ = models
    path = str(tmp_path / "transfiner_r50_1x.pth")
    torch.save({"model": reference_state_dict, "iteration": 89999}, path)
    InstSegCheckpointer(model, strict=True).load(path)  # raises on missing keys or other shapes
    assert not any("not used by the model" in m for m in checkpoint_log)  # nothing unexpected
    assert len(model.state_dict()) == len(reference_state_dict)
    assert checkpoint_log[-1] == (
        f"Checkpoint {path!r}: recognised a checkpoint of detectron2 GeneralizedRCNN + "
        f"SysCV/transfiner; renamed {len(reference_transfiner_shapes())} keys"
    )
    # values land where they belong (1x1 convs become linear layers)
    sd, ref = model.state_dict(), reference_state_dict
    torch.testing.assert_close(sd["roi_heads.mask_head.refiner.transformer.input_proj.weight"],
                               ref["roi_heads.mask_head.encoder.conv_fuse.weight"][:, :, 0, 0])  # fmt: skip
    torch.testing.assert_close(sd["roi_heads.semantic_head.convs.3.weight"],
                               ref["roi_heads.mask_pooler.conv_norm_relus_semantic.6.weight"])  # fmt: skip
    torch.testing.assert_close(sd["roi_heads.mask_head.incoherent_fcn4.bias"],
                               ref["roi_heads.mask_head.mask_fcn_uncertain4.bias"])  # fmt: skip
    torch.testing.assert_close(sd["roi_heads.mask_head.mask_fcn1.weight"],
                               ref["roi_heads.mask_head.mask_fcn1.weight"])  # fmt: skip


def test_partial_reference_checkpoint_is_refused(reference_state_dict):
    sd = dict(reference_state_dict)
    del sd["roi_heads.mask_head.encoder.conv_r1.2.weight"]
    with pytest.raises(
        ValueError, match=r"lacks \['roi_heads.mask_head.encoder.conv_r1.2.weight'\]"
    ):
        convert_reference_state_dict(sd)


def test_our_checkpoints_are_left_alone(models, tmp_path, checkpoint_log):
    _, model, cfg = models
    InstSegCheckpointer(model, str(tmp_path), meta={"meta_architecture": "GeneralizedRCNN"}).save(
        "ours"
    )
    fresh = build_model(cfg)
    InstSegCheckpointer(fresh, strict=True).load(str(tmp_path / "ours.pth"))
    assert not any("recognised" in m for m in checkpoint_log)  # the project's format: as it is
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
