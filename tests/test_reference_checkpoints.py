"""Reference checkpoints through MODEL.WEIGHTS: recognised, converted while loading, evaluated.

Per family, a raw checkpoint as its reference implementation saves it (its names, DDP prefix,
buffers, file format) is built from a shapes model by the reference's naming (the inverse of
the package's key map; the key lists of the published models are pinned by
test_fcos_convert.py, test_solo.py, test_sparseinst.py and test_transfiner_checkpoint.py) and
evaluated by ``train_net.py --eval-only`` with no conversion step.
"""

import os
import pickle
import re

import pytest
import torch

from instseg_d2.engine import CheckpointMismatchError, InstSegCheckpointer, Trainer, build_config
from instseg_d2.engine.checkpoint import published_file_url
from instseg_d2.engine.conversion import (
    ConversionReport,
    convert_reference_checkpoint,
    model_parts,
    register_reference_converter,
)
from instseg_d2.testing import TINY_OPTS
from shapes_configs import SHAPES_CONFIGS


# ------------------------------------------------------------- the reference's names
def _rename(state, rules):
    """``state`` with the first matching (pattern, replacement) of ``rules`` applied per key."""
    out = {}
    for k, v in state.items():
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, k)
            if n:
                k = new
                break
        out[k] = v
    return out


def adelaidet_fcos(state, condinst=False):
    """AdelaiDet's save of an FCOS-family model: DDP prefix, the old ``centerness`` name,
    detectron2's old persistent pixel buffers, CondInst's dynamic-head buffers."""
    ref = {k.replace("fcos_head.ctrness", "fcos_head.centerness"): v for k, v in state.items()}
    ref.update(pixel_mean=torch.zeros(3, 1, 1), pixel_std=torch.ones(3, 1, 1))
    if condinst:
        ref["mask_head.sizes_of_interest"] = torch.tensor([8.0, 16, 32, 64, 128])
        ref["mask_head._iter"] = torch.zeros(1)
    return {"module." + k: v for k, v in ref.items()}


def adelaidet_solov2(state):
    return _rename(state, [
        (r"^head\.cate_branch\.tower\.", "ins_head.cate_tower."),
        (r"^head\.kernel_tower\.", "ins_head.kernel_tower."),
        (r"^head\.cate_branch\.pred\.", "ins_head.cate_pred."),
        (r"^head\.kernel_pred\.", "ins_head.kernel_pred."),
        (r"^head\.mask_branch\.levels\.(\d+)\.(\d+)\.", r"mask_head.convs_all_levels.\1.conv\2."),
        (r"^head\.mask_branch\.pred\.", "mask_head.conv_pred."),
    ])  # fmt: skip


def hustvl_sparseinst(state):
    levels = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.lateral_convs"))
    flip = lambda name: lambda m: f"encoder.{name}.{levels - 1 - int(m.group(1))}."  # noqa: E731
    return _rename(state, [
        (r"^encoder\.lateral_convs\.(\d+)\.", flip("fpn_laterals")),
        (r"^encoder\.output_convs\.(\d+)\.", flip("fpn_outputs")),
        (r"^encoder\.ppm\.convs\.(\d+)\.", r"encoder.ppm.stages.\1.1."),
        (r"^decoder\.(inst|mask)_branch\.convs\.(\d+)\.",
         lambda m: f"decoder.{m.group(1)}_branch.{m.group(1)}_convs.{2 * int(m.group(2))}."),
    ])  # fmt: skip


def syscv_transfiner(state):
    """SysCV/transfiner's names; the shapes config's ``incoherent_input_proj`` (a CPU-size
    projection the reference does not need) keeps its name."""
    p = "roi_heads.mask_head."
    ref = _rename(state, [
        (r"^roi_heads\.semantic_head\.convs\.(\d+)\.",
         lambda m: f"roi_heads.mask_pooler.conv_norm_relus_semantic.{2 * int(m.group(1))}."),
        (r"^roi_heads\.semantic_head\.predictor\.", p + "predictor_semantic_s."),
        (r"^roi_heads\.mask_head\.incoherent_fcn", p + "mask_fcn_uncertain"),
        (r"^roi_heads\.mask_head\.incoherent_deconv\.", p + "deconv_uncertain."),
        (r"^roi_heads\.mask_head\.incoherent_predictor\.", p + "predictor_uncertain."),
        (r"^roi_heads\.mask_head\.boundary_deconv\.", p + "deconv_bo."),
        (r"^roi_heads\.mask_head\.boundary_predictor\.", p + "predictor_bo."),
        (r"^roi_heads\.mask_head\.refiner\.transformer\.input_proj\.", p + "encoder.conv_fuse."),
        (r"^roi_heads\.mask_head\.refiner\.transformer\.output_fc1\.", p + "encoder.conv_r1.0."),
        (r"^roi_heads\.mask_head\.refiner\.transformer\.output_fc2\.", p + "encoder.conv_r1.2."),
        (r"^roi_heads\.mask_head\.refiner\.transformer\.layers\.", p + "encoder.layers."),
    ])  # fmt: skip
    for k in ("encoder.conv_fuse.weight", "encoder.conv_r1.0.weight", "encoder.conv_r1.2.weight"):
        ref[p + k] = ref[p + k][:, :, None, None]  # 1x1 convs there, linear layers here
    return ref


def detectron2_zoo(state):
    """A model-zoo file of 2019: the buffers detectron2 saved then, numpy arrays in a pickle."""
    ref = dict(state, pixel_mean=torch.zeros(3, 1, 1), pixel_std=torch.ones(3, 1, 1))
    ref["proposal_generator.anchor_generator.cell_anchors.0"] = torch.zeros(3, 4)
    return {k: v.numpy() for k, v in ref.items()}


# (shapes config, reference file name, writer, source in the log, extra options)
# few detections of the untrained models: the evaluation takes a second
FEW = ["TEST.DETECTIONS_PER_IMAGE", "10"]
FAST_TRANSFINER = ["TEST.DETECTIONS_PER_IMAGE", "2",
                   "MODEL.TRANSFINER.TEST_INCOHERENT_THRESH", "[0.7, 0.7]"]  # fmt: skip
FAMILIES = {
    "FCOS": ("FCOS/shapes_FCOS_R_18.yaml", "fcos.pth", adelaidet_fcos, "AdelaiDet FCOS", []),
    "CondInst": ("CondInst/shapes_CondInst_R_18.yaml", "condinst.pth",
                 lambda s: adelaidet_fcos(s, condinst=True), "AdelaiDet CondInst", []),
    "BlendMask": ("BlendMask/shapes_BlendMask_R_18.yaml", "blendmask.pth", adelaidet_fcos,
                  "AdelaiDet BlendMask", []),
    "SOLOv2": ("SOLO/shapes_SOLOv2_R_18.yaml", "solov2.pth", adelaidet_solov2, "AdelaiDet SOLOv2",
               []),
    "SparseInst": ("SparseInst/shapes_SparseInst_GIAM_R_18.yaml", "sparseinst.pth", hustvl_sparseinst,
                   "hustvl/SparseInst", []),
    "Transfiner": ("Transfiner/shapes_Transfiner_R_18.yaml", "transfiner.pth", syscv_transfiner,
                   "detectron2 GeneralizedRCNN + SysCV/transfiner", FAST_TRANSFINER),
    "MaskRCNN": ("MaskRCNN/shapes_MaskRCNN_R_18.yaml", "model_final.pkl", detectron2_zoo,
                 "detectron2 GeneralizedRCNN", FEW),
}  # fmt: skip


def _shapes_model(repo_root, config, opts=()):
    cfg = build_config(os.path.join(repo_root, "configs", config), list(TINY_OPTS) + list(opts))
    torch.manual_seed(0)
    return Trainer.build_model(cfg)


def _save(path, state):
    if str(path).endswith(".pkl"):  # detectron2's model-zoo format
        with open(path, "wb") as f:
            pickle.dump({"model": state, "__author__": "Detectron2 Model Zoo"}, f)
    else:
        torch.save({"model": state, "iteration": 89999}, path)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_raw_reference_checkpoint_evaluates(family, tiny_shapes, repo_root, tmp_path,
                                            checkpoint_log):  # fmt: skip
    import train_net

    config, name, to_reference, source, opts = FAMILIES[family]
    model = _shapes_model(repo_root, config, opts)
    ref = to_reference(model.state_dict())
    assert set(ref) != set(model.state_dict())  # the reference's names, not ours
    path = str(tmp_path / name)
    _save(path, ref)
    # train_net.py --eval-only MODEL.WEIGHTS <file>: its checkpointer is strict (no parameter
    # missing or of another shape); nothing of the file is left unused
    args = train_net.default_argument_parser().parse_args(
        ["--config-file", os.path.join(repo_root, "configs", config), "--eval-only"]
        + list(TINY_OPTS) + opts + ["MODEL.WEIGHTS", path, "OUTPUT_DIR", str(tmp_path / "eval")]
    )  # fmt: skip
    results = train_net.main(args)
    assert "bbox" in results and (family == "FCOS" or "segm" in results)
    assert f"Checkpoint {path!r}: recognised a checkpoint of {source};" in "\n".join(checkpoint_log)
    assert not any("not used by the model" in m for m in checkpoint_log)


@pytest.mark.parametrize("config", SHAPES_CONFIGS)
def test_own_names_pass_unchanged(config, tiny_shapes, repo_root):
    model = _shapes_model(repo_root, config)
    state = model.state_dict()
    out, report = convert_reference_checkpoint(state, model_parts(model))
    assert list(out) == list(state) and all(out[k] is state[k] for k in state)
    assert report is None or not report.changed


def test_report_names_renamed_and_dropped_keys():
    a, b, c = torch.zeros(2), torch.ones(2, 1, 1), torch.zeros(1)
    register_reference_converter(
        "_ToyPart", "toy reference", lambda sd: "old.w" in sd,
        lambda sd: {"new.w": sd["old.w"], "kept": sd["kept"], "conv": sd["conv"][:, 0, 0]},
    )  # fmt: skip
    state = {"module.old.w": a, "module.kept": c, "module.buffer": c.clone(), "module.conv": b}
    out, report = convert_reference_checkpoint(state, ["_ToyModel", "_ToyPart"])
    assert out["new.w"] is a and torch.equal(out["conv"], b[:, 0, 0])
    assert (report.renamed, report.dropped, report.stripped_prefix) == (1, ["buffer"], True)
    assert str(report) == (
        "recognised a checkpoint of toy reference; renamed 1 key, dropped buffer, "
        "removed the 'module.' prefix"
    )
    assert convert_reference_checkpoint({"x": a}, ["_ToyPart"]) == ({"x": a}, None)
    assert str(ConversionReport(["r"])) == "recognised a checkpoint of r; renamed 0 keys"


def test_other_models_reference_refused_project_checkpoint_not(tiny_shapes, repo_root, tmp_path):
    cond = _shapes_model(repo_root, FAMILIES["CondInst"][0])
    path = str(tmp_path / "condinst.pth")
    _save(path, adelaidet_fcos(cond.state_dict(), condinst=True))
    blend = _shapes_model(repo_root, FAMILIES["BlendMask"][0])
    with pytest.raises(CheckpointMismatchError, match=(
        r"condinst.pth' does not fit the model \(BlendMask\): it is a checkpoint of AdelaiDet "
        r"CondInst \(for a CondInst model\), and the model has no CondInst \(its parts with a "
        r"reference format: BlendMask, FCOS\)"
    )):  # fmt: skip
        InstSegCheckpointer(blend).load(path)
    # the project's own CondInst checkpoint initialises BlendMask's detector (fine-tuning)
    InstSegCheckpointer(cond, str(tmp_path), meta={"meta_architecture": "CondInst"}).save("ours")
    InstSegCheckpointer(blend, meta={"meta_architecture": "BlendMask"}).load(
        str(tmp_path / "ours.pth")
    )
    key = "proposal_generator.fcos_head.cls_logits.weight"
    assert torch.equal(blend.state_dict()[key], cond.state_dict()[key])


def test_published_urls_are_read_from_the_file():
    hf = "https://huggingface.co/ZjuCv/AdelaiDet/blob/main/R_50_1x.pth"
    assert (
        published_file_url(hf) == "https://huggingface.co/ZjuCv/AdelaiDet/resolve/main/R_50_1x.pth"
    )
    fcos = "https://huggingface.co/tianzhi/AdelaiDet-FCOS/resolve/main/FCOS_R_50_1x.pth"
    assert published_file_url(fcos + "?download=true") == fcos
    d2 = "detectron2://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x/137260431/model_final.pkl"
    assert published_file_url(d2) == d2
    assert published_file_url("out/model.pth") == "out/model.pth"
    keep = "https://example.org/a.pth?matching_heuristics=True"
    assert published_file_url(keep) == keep


def test_convert_tool_writes_the_projects_format(tiny_shapes, repo_root, tmp_path, load_tool):
    config = os.path.join(repo_root, "configs", FAMILIES["SOLOv2"][0])
    model = _shapes_model(repo_root, FAMILIES["SOLOv2"][0])
    src, dst = str(tmp_path / "solov2.pth"), str(tmp_path / "converted.pth")
    _save(src, adelaidet_solov2(model.state_dict()))
    tool = load_tool("convert_checkpoint")
    tool.main(["--config-file", config, "--input", src, "--output", dst] + list(TINY_OPTS))
    out = torch.load(dst, weights_only=False)
    assert out["instseg_meta"]["meta_architecture"] == "SOLO"
    assert len(out["instseg_meta"]["thing_classes"]) == 5
    assert list(out["model"]) == list(model.state_dict())
    assert all(torch.equal(out["model"][k], v) for k, v in model.state_dict().items())
    # a file that does not fit the config (another model's) stops with a message
    bad = str(tmp_path / "sparseinst.pth")
    _save(bad, hustvl_sparseinst(_shapes_model(repo_root, FAMILIES["SparseInst"][0]).state_dict()))
    with pytest.raises(SystemExit, match="sparseinst.pth' does not fit the model"):
        tool.main(["--config-file", config, "--input", bad, "--output", dst] + list(TINY_OPTS))


def test_training_and_benchmark_load_raw_files_too(tiny_shapes, repo_root, tmp_path):
    from instseg_d2.engine import load_model

    config = FAMILIES["SOLOv2"][0]
    model = _shapes_model(repo_root, config)
    path = str(tmp_path / "solov2.pth")
    _save(path, adelaidet_solov2(model.state_dict()))
    opts = list(TINY_OPTS) + ["MODEL.WEIGHTS", path, "OUTPUT_DIR", str(tmp_path / "train")]
    cfg = build_config(os.path.join(repo_root, "configs", config), opts)
    key = "head.kernel_pred.weight"
    # tools/benchmark.py's loader (strict)
    assert torch.equal(load_model(cfg, path).state_dict()[key], model.state_dict()[key])
    # the start of a training run
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    assert torch.equal(trainer.model.state_dict()[key], model.state_dict()[key])
