"""AdelaiDet checkpoints (FCOS_R_50_1x, CondInst_MS_R_50_1x, BlendMask_R_50_1x), saved as the
reference saves them, load through the project's checkpointer with no missing and no unexpected
keys; a checkpoint of another model is refused.

The reference state dicts are written down here from AdelaiDet's code (commit 3672122):
detectron2's ResNet-50 (FrozenBN) + FPN on res3-res5 with ``LastLevelP6P7`` on P5
(adet/modeling/backbone/fpn.py), ``FCOSHead`` (adet/modeling/fcos/fcos.py: 4+4 convs with
GroupNorm(32), cls_logits / bbox_pred / ctrness, one ``Scale`` per level if USE_SCALE),
CondInst's ``controller`` / ``MaskBranch`` / ``DynamicMaskHead`` buffers
(adet/modeling/condinst/*.py) and BlendMask's ``top_layer`` / ``ProtoNet``
(adet/modeling/blendmask/*.py), with the published configs' settings.
"""

import pytest
import torch

from instseg_d2.engine import CheckpointMismatchError, InstSegCheckpointer, Trainer, build_config

C = 80  # COCO


def _norm(prefix, ch, kind):
    if kind == "FrozenBN":  # detectron2 FrozenBatchNorm2d: weight/bias/running stats
        names = ["weight", "bias", "running_mean", "running_var"]
    elif kind == "GN":
        names = ["weight", "bias"]
    else:  # BatchNorm2d / SyncBatchNorm
        names = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    return {f"{prefix}.{n}": (() if n == "num_batches_tracked" else (ch,)) for n in names}


def _conv(prefix, cout, cin, k, bias=True):
    d = {f"{prefix}.weight": (cout, cin, k, k)}
    if bias:
        d[f"{prefix}.bias"] = (cout,)
    return d


def resnet50_fpn_p3p7():
    sd = {}
    sd.update(_conv("backbone.bottom_up.stem.conv1", 64, 3, 7, bias=False))
    sd.update(_norm("backbone.bottom_up.stem.conv1.norm", 64, "FrozenBN"))
    cin = 64
    for stage, (n, b, out) in enumerate(
        [(3, 64, 256), (4, 128, 512), (6, 256, 1024), (3, 512, 2048)]
    ):
        for i in range(n):
            p = f"backbone.bottom_up.res{stage + 2}.{i}"
            if i == 0:
                sd.update(_conv(f"{p}.shortcut", out, cin, 1, bias=False))
                sd.update(_norm(f"{p}.shortcut.norm", out, "FrozenBN"))
            for j, (co, ci, k) in enumerate(
                [(b, cin if i == 0 else out, 1), (b, b, 3), (out, b, 1)]
            ):
                sd.update(_conv(f"{p}.conv{j + 1}", co, ci, k, bias=False))
                sd.update(_norm(f"{p}.conv{j + 1}.norm", co, "FrozenBN"))
        cin = out
    for lvl, ch in ((3, 512), (4, 1024), (5, 2048)):
        sd.update(_conv(f"backbone.fpn_lateral{lvl}", 256, ch, 1))
        sd.update(_conv(f"backbone.fpn_output{lvl}", 256, 256, 3))
    sd.update(_conv("backbone.top_block.p6", 256, 256, 3))
    sd.update(_conv("backbone.top_block.p7", 256, 256, 3))
    return sd


def fcos_head(use_scale=True, legacy_name=False):
    p = "proposal_generator.fcos_head"
    sd = {}
    for tower in ("cls_tower", "bbox_tower"):
        for i in range(4):
            sd.update(_conv(f"{p}.{tower}.{3 * i}", 256, 256, 3))
            sd.update(_norm(f"{p}.{tower}.{3 * i + 1}", 256, "GN"))
    sd.update(_conv(f"{p}.cls_logits", C, 256, 3))
    sd.update(_conv(f"{p}.bbox_pred", 4, 256, 3))
    sd.update(_conv(f"{p}.{'centerness' if legacy_name else 'ctrness'}", 1, 256, 3))
    if use_scale:
        sd.update({f"{p}.scales.{i}.scale": (1,) for i in range(5)})
    return sd


def reference_shapes(kind, legacy=False):
    sd = resnet50_fpn_p3p7()
    sd.update(fcos_head(use_scale=kind != "BlendMask", legacy_name=legacy))
    if kind == "CondInst":
        sd.update(_conv("controller", 169, 256, 3))
        for i in range(3):
            sd.update(_conv(f"mask_branch.refine.{i}.0", 128, 256, 3, bias=False))
            sd.update(_norm(f"mask_branch.refine.{i}.1", 128, "BN"))
        for i in range(4):
            sd.update(_conv(f"mask_branch.tower.{i}.0", 128, 128, 3, bias=False))
            sd.update(_norm(f"mask_branch.tower.{i}.1", 128, "BN"))
        sd.update(_conv("mask_branch.tower.4", 8, 128, 1))
        sd.update({"mask_head.sizes_of_interest": (5,), "mask_head._iter": (1,)})
    if kind == "BlendMask":
        sd.update(_conv("top_layer", 4 * 14 * 14, 256, 3))
        for i in range(3):
            sd.update(_conv(f"basis_module.refine.{i}.0", 128, 256, 3, bias=False))
            sd.update(_norm(f"basis_module.refine.{i}.1", 128, "SyncBN"))
        for i in (0, 1, 2, 4):  # 3 is the x2 upsampling
            sd.update(_conv(f"basis_module.tower.{i}.0", 128, 128, 3, bias=False))
            sd.update(_norm(f"basis_module.tower.{i}.1", 128, "SyncBN"))
        sd.update(_conv("basis_module.tower.5", 4, 128, 1))
        sd.update(_conv("basis_module.seg_head.0", 128, 256, 3, bias=False))
        sd.update(_norm("basis_module.seg_head.1", 128, "BN"))
        sd.update(_conv("basis_module.seg_head.3", 128, 128, 3, bias=False))
        sd.update(_norm("basis_module.seg_head.4", 128, "BN"))
        sd.update(_conv("basis_module.seg_head.6", C + 1, 128, 1))
    return sd


def _state(shapes, prefix=""):
    g = torch.Generator().manual_seed(0)
    return {
        prefix + k: torch.randn(s, generator=g) if s else torch.tensor(7) for k, s in shapes.items()
    }


CASES = [
    ("OneStageDetector", "configs/FCOS/FCOS_R_50_1x.yaml", "AdelaiDet FCOS"),
    ("CondInst", "configs/CondInst/CondInst_MS_R_50_1x.yaml", "AdelaiDet CondInst"),
    ("BlendMask", "configs/BlendMask/BlendMask_R_50_1x.yaml", "AdelaiDet BlendMask"),
]


def _model(repo_root, config):
    cfg = build_config(f"{repo_root}/{config}", ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    return Trainer.build_model(cfg)


@pytest.mark.parametrize("kind,config,source", CASES)
def test_reference_checkpoint_loads_without_missing_or_unexpected(
    kind, config, source, repo_root, tmp_path, checkpoint_log
):
    model = _model(repo_root, config)
    # published checkpoints: DDP-style prefix, older names, detectron2's old persistent buffers
    ref = _state(reference_shapes(kind, legacy=kind == "BlendMask"), "module.")
    ref["module.pixel_mean"], ref["module.pixel_std"] = torch.zeros(3, 1, 1), torch.ones(3, 1, 1)
    path = str(tmp_path / "reference.pth")
    torch.save({"model": ref, "iteration": 89999}, path)
    InstSegCheckpointer(model, strict=True).load(path)  # strict: no parameter left missing

    mine = model.state_dict()
    assert len(mine) == len(ref) - 2 - 2 * (kind == "CondInst")  # without the dropped buffers
    for key, value in mine.items():
        name = "module." + key
        if kind == "BlendMask":
            name = name.replace("ctrness", "centerness")
        assert torch.equal(value, ref[name]), key
    dropped = ("mask_head.sizes_of_interest, mask_head._iter, " if kind == "CondInst" else "") + (
        "pixel_mean, pixel_std"
    )  # in the checkpoint's order
    renamed = 2 if kind == "BlendMask" else 0  # ctrness.weight, ctrness.bias
    line = (
        f"Checkpoint '{path}': recognised a checkpoint of {source}; renamed {renamed} keys, "
        f"dropped {dropped}, removed the 'module.' prefix"
    )
    assert line in checkpoint_log
    assert not any("not used by the model" in m for m in checkpoint_log)


def test_another_models_checkpoint_is_refused_naming_both(repo_root, tmp_path):
    cond = tmp_path / "condinst.pth"
    torch.save({"model": _state(reference_shapes("CondInst"))}, cond)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"condinst.pth' does not fit the model \(BlendMask\): it is a checkpoint of "
        r"AdelaiDet CondInst \(for a CondInst model\), and the model has no CondInst",
    ):
        InstSegCheckpointer(_model(repo_root, "configs/BlendMask/BlendMask_R_50_1x.yaml")).load(
            str(cond)
        )


def test_fcos_checkpoint_initialises_condinst_detector(repo_root, tmp_path, checkpoint_log):
    # FCOS's converter is registered for every model with an FCOS module: fine-tuning CondInst
    # from an FCOS detector loads the detector; evaluating (strict) refuses the missing masks
    fcos = tmp_path / "fcos.pth"
    state = _state(reference_shapes("OneStageDetector"))
    torch.save({"model": state}, fcos)
    model = _model(repo_root, "configs/CondInst/CondInst_MS_R_50_1x.yaml")
    InstSegCheckpointer(model).load(str(fcos))
    key = "proposal_generator.fcos_head.bbox_pred.weight"
    assert torch.equal(model.state_dict()[key], state[key])
    assert any("recognised a checkpoint of AdelaiDet FCOS" in m for m in checkpoint_log)
    with pytest.raises(CheckpointMismatchError, match="lacks .* parameter"):
        InstSegCheckpointer(model, strict=True).load(str(fcos))
