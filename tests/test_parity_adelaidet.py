"""Parity with AdelaiDet's FCOS, CondInst, BlendMask and SOLOv2 (golden fixtures).

``tests/fixtures/parity/adelaidet_*.pt`` hold what AdelaiDet's own models computed, stage by
stage, on two small images with fixed ground truth, with every parameter set by
``instseg_d2.parity.parity_tensor`` (written by ``tools/parity/adelaidet.py``; see
tools/parity/README.md). Here the project's models are built from their shapes configs with
the same small settings, given the same weights (a state dict in the reference's names, loaded
through the checkpointer) and run on the same inputs. Each comparison names its stage, so that
a failure says where parity breaks.
"""

import contextlib
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from instseg_d2.engine import build_config
from instseg_d2.engine.checkpoint import InstSegCheckpointer
from instseg_d2.parity import parity_batched_inputs, parity_reference_state

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "parity")
RTOL, ATOL = 1e-5, 1e-6
MASK_PIXELS = 1e-3  # fraction of binary mask pixels allowed to differ

# The project's config of each fixture: its shapes config plus the reference's settings. FCOS,
# CondInst and BlendMask read AdelaiDet's keys (MODEL.FCOS, .CONDINST, .BLENDMASK,
# .BASIS_MODULE, ...), so the generator's config, recorded in the fixture, applies as it is;
# SOLOv2's keys are MODEL.SOLO.* here (MODEL.SOLOV2.* there).
_COMMON = [
    "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.NORM", "FrozenBN",  # detectron2's default, which AdelaiDet's configs keep
]  # fmt: skip
SHAPES_CONFIGS = {
    "fcos": "FCOS/shapes_FCOS_R_18.yaml",
    "condinst": "CondInst/shapes_CondInst_R_18.yaml",
    "blendmask": "BlendMask/shapes_BlendMask_R_18.yaml",
    "solov2": "SOLO/shapes_SOLOv2_R_18.yaml",
}
SOLOV2_OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.SOLO.NUM_GRIDS", "[12, 10, 8, 6, 4]",
    "MODEL.SOLO.MIN_MASK_AREAS", "[8, 8, 16, 32, 32]",
    "MODEL.SOLO.INSTANCE_CHANNELS", "32",
    "MODEL.SOLO.NUM_INSTANCE_CONVS", "2",
    "MODEL.SOLO.MASK_CHANNELS", "32",
    "MODEL.SOLO.NUM_MASKS", "32",
]  # fmt: skip
_CONVERTERS = {
    "fcos": "instseg_d2.modeling.fcos.checkpoint",
    "condinst": "condinst_d2.checkpoint",
    "blendmask": "blendmask_d2.checkpoint",
    "solov2": "solo_d2.checkpoint",
}


# ------------------------------------------------------------------------------- helpers
def project_converter(method):
    """The project's converter of the method's reference checkpoints (reference state dict ->
    project state dict); it defines which project name each reference parameter has."""
    import importlib

    return importlib.import_module(_CONVERTERS[method]).convert_reference_state_dict


def load_fixture(name):
    path = os.path.join(FIXTURES, f"adelaidet_{name}.pt")
    if not os.path.isfile(path):
        pytest.fail(f"missing fixture {path}: run tools/parity/adelaidet.py (see its README)")
    return torch.load(path, weights_only=True)


def project_model(method, fixture, tmp_path, repo_root, opts=()):
    """The project's model with the fixture's weights: a state dict in the reference's names
    (the parity value of each parameter's project name), saved and loaded like a user's
    checkpoint."""
    settings = SOLOV2_OPTS if method == "solov2" else fixture["reference"]["config"]
    config = os.path.join(repo_root, "configs", SHAPES_CONFIGS[method])
    cfg = build_config(config, _COMMON + list(settings) + list(opts))
    model = build_model(cfg)
    params = fixture["parameters"]
    state = parity_reference_state(params, project_converter(method), fixture["overrides"])
    path = str(tmp_path / f"{method}_reference_weights.pth")
    torch.save({"model": state}, path)  # a raw reference file: converted while loading
    InstSegCheckpointer(model, strict=True).load(path)
    return model


def close(actual, expected, what):
    """Floating-point values equal up to float rounding: within 1e-5 of the reference's, relative
    to the value or to the largest magnitude of the tensor (rounding, e.g. of reductions split
    over another number of threads, is relative to the magnitudes summed)."""
    actual = actual.detach()
    assert (
        actual.shape == expected.shape
    ), f"{what}: shape {tuple(actual.shape)} != reference {tuple(expected.shape)}"
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(
        actual.float(), expected.float(), rtol=RTOL, atol=max(RTOL * scale, ATOL),
        msg=lambda m: f"{what} differs from AdelaiDet's:\n{m}",
    )  # fmt: skip


def equal(actual, expected, what):
    """Discrete values (assignments, classes) identical."""
    actual = actual.detach()
    assert (
        actual.shape == expected.shape
    ), f"{what}: shape {tuple(actual.shape)} != reference {tuple(expected.shape)}"
    diff = (actual.to(expected.dtype) != expected).nonzero()
    assert (
        len(diff) == 0
    ), f"{what} differs from AdelaiDet's at {len(diff)} entries, e.g. {diff[:5].tolist()}"


def same_masks(actual, expected, what):
    """Binary masks identical but for at most 1 pixel in 1000 (probabilities within float
    rounding of the threshold may fall on either side)."""
    assert (
        actual.shape == expected.shape
    ), f"{what}: shape {tuple(actual.shape)} != reference {tuple(expected.shape)}"
    n = int((actual.bool() != expected).sum())
    assert (
        n <= MASK_PIXELS * expected.numel()
    ), f"{what} differ from AdelaiDet's at {n} of {expected.numel()} pixels"


def snapshot(x):
    """A copy of a module's output (post-processing later scales boxes in place)."""
    if torch.is_tensor(x):
        return x.detach().clone()
    if isinstance(x, Boxes):
        return Boxes(x.tensor.detach().clone())
    if isinstance(x, Instances):
        return Instances(x.image_size, **{k: snapshot(v) for k, v in x.get_fields().items()})
    if isinstance(x, (list, tuple)):
        return type(x)(snapshot(v) for v in x)
    if isinstance(x, dict):
        return {k: snapshot(v) for k, v in x.items()}
    return x


@contextlib.contextmanager
def recording(**modules):
    """``{name: copy of the module's latest output}`` while in the block (forward hooks)."""
    seen = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, k=k: seen.__setitem__(k, snapshot(o)))
        for k, m in modules.items()
    ]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def compare_instances(results, expected, what, masks=True):
    for i, (r, e) in enumerate(zip(results, expected)):
        inst = r["instances"]
        equal(inst.pred_classes, e["classes"], f"{what}: image {i} classes")
        close(inst.scores, e["scores"], f"{what}: image {i} scores")
        if "boxes" in e and e["boxes"].abs().sum() > 0:  # SOLOv2's reference boxes are zeros
            close(inst.pred_boxes.tensor, e["boxes"], f"{what}: image {i} boxes")
        if masks:
            same_masks(inst.pred_masks, e["masks"], f"{what}: image {i} masks")


def compare_detections(dets, expected, what):
    for i, (d, e) in enumerate(zip(dets, expected)):
        equal(d.pred_classes, e["classes"], f"{what}: image {i} classes")
        close(d.scores, e["scores"], f"{what}: image {i} scores")
        close(d.pred_boxes.tensor, e["boxes"], f"{what}: image {i} boxes")
        close(d.locations, e["locations"], f"{what}: image {i} locations")
        equal(d.fpn_levels, e["fpn_levels"], f"{what}: image {i} FPN levels")
        if "top_feat" in e:
            close(d.top_feat, e["top_feat"], f"{what}: image {i} top-module outputs")


def compare_head(head, expected, what):
    logits, reg, ctrness, _ = head
    for name, got in (("logits", logits), ("reg", reg), ("ctrness", ctrness)):
        for level, (g, e) in enumerate(zip(got, expected[name])):
            close(g, e, f"{what}: FCOS head {name} of level {level}")


def compare_fcos_training(extras, losses, expected):
    pos, exp = extras["instances"], expected["positives"]
    equal(pos.pos_inds, exp["pos_inds"], "FCOS assignment: positive locations")
    equal(pos.gt_inds, exp["gt_inds"], "FCOS assignment: GT of each positive location")
    equal(pos.labels, exp["labels"], "FCOS assignment: class of each positive location")
    close(pos.reg_targets, exp["reg_targets"], "FCOS assignment: box targets (l, t, r, b)")
    close(pos.gt_ctrs, exp["gt_ctrs"], "FCOS assignment: centre-ness targets")
    if "top_feats" in exp:
        close(pos.top_feats, exp["top_feats"], "top-module outputs of the positive locations")
    close(torch.tensor(extras["loss_denorm"]), torch.tensor(expected["loss_denorm"]), "loss_denorm")
    compare_losses(losses, expected["losses"])


def compare_losses(losses, expected):
    assert sorted(losses) == sorted(expected), f"loss names {sorted(losses)} != {sorted(expected)}"
    for k, v in expected.items():
        close(losses[k], v, f"loss {k}")


# --------------------------------------------------------------------------------- tests
def fcos_family(method, tmp_path, repo_root):
    """The project's model of the fixture, the fixture's inference and training records, and
    the modules whose outputs every FCOS-family test records (FCOS's head, FCOS)."""
    fx = load_fixture(method)
    model = project_model(method, fx, tmp_path, repo_root)
    pg = model.proposal_generator
    return model, fx["inference"], fx["training"], dict(head=pg.fcos_head, fcos=pg)


def run(model, inputs, training):
    """Inference (a list of outputs) or a training forward (the losses) on the fixture's images."""
    model.train(training)
    with torch.set_grad_enabled(training):
        return model(parity_batched_inputs(inputs, training=training))


@pytest.fixture(scope="module")
def inputs():
    return load_fixture("inputs")


def test_parity_fcos(inputs, tmp_path, repo_root):
    model, inf, train, modules = fcos_family("fcos", tmp_path, repo_root)
    with recording(**modules) as seen:
        results = run(model, inputs, training=False)
        compare_head(seen["head"], inf["head"], "inference")
        compare_detections(seen["fcos"][0], inf["detections"], "FCOS detections")
        compare_instances(results, inf["instances"], "final instances", masks=False)
        losses = run(model, inputs, training=True)
        compare_fcos_training(seen["fcos"][0], losses, train)


def test_parity_condinst(inputs, tmp_path, repo_root):
    model, inf, train, modules = fcos_family("condinst", tmp_path, repo_root)
    with recording(**modules, feats=model.mask_branch, masks=model.mask_head) as seen:
        model.eval()
        for i, x in enumerate(parity_batched_inputs(inputs, training=False)):
            seen.pop("masks", None)
            with torch.no_grad():  # one image at a time: AdelaiDet's CondInst cannot batch them
                results = model([x])
            what = f"inference of image {i}"
            compare_head(seen["head"], inf["head"][i], what)
            close(seen["feats"], inf["mask_feats"][i], f"{what}: mask branch features")
            compare_detections(seen["fcos"][0], [inf["detections"][i]], f"{what}: FCOS detections")
            if inf["masks_net"][i] is not None:
                probs = seen["masks"].sigmoid()
                close(probs, inf["masks_net"][i], f"{what}: mask probabilities at stride 4")
            compare_instances(results, [inf["instances"][i]], f"{what}: final instances")

        batch = parity_batched_inputs(inputs, training=True)
        gt = [x["instances"] for x in batch]
        model.prepare_targets(model.preprocess_image(batch), gt)
        for i, g in enumerate(gt):
            equal(g.gt_bitmasks, train["gt_bitmasks"][i], f"image {i} GT masks sampled at stride 4")
        losses = run(model, inputs, training=True)
        close(seen["feats"], train["mask_feats"], "training: mask branch features (BN train)")
        compare_fcos_training(seen["fcos"][0], losses, train)


def test_parity_blendmask(inputs, tmp_path, repo_root):
    model, inf, train, modules = fcos_family("blendmask", tmp_path, repo_root)
    with recording(**modules, bases=model.basis_module, blended=model.blender) as seen:
        results = run(model, inputs, training=False)
        compare_head(seen["head"], inf["head"], "inference")
        close(seen["bases"], inf["bases"], "inference: bases")
        compare_detections(seen["fcos"][0], inf["detections"], "FCOS detections")
        for i, d in enumerate(seen["blended"]):
            close(d.pred_masks, inf["masks_net"][i], f"image {i}: blended mask probabilities")
        compare_instances(results, inf["instances"], "final instances")
        losses = run(model, inputs, training=True)
        close(seen["bases"], train["bases"], "training: bases (BN train)")
        compare_fcos_training(seen["fcos"][0], losses, train)


def test_parity_solov2_inference(inputs, tmp_path, repo_root):
    fx = load_fixture("solov2")
    model = project_model("solov2", fx, tmp_path, repo_root).eval()
    with torch.no_grad():
        out = model.run_head(model.preprocess_image(parity_batched_inputs(inputs, False)).tensor)
    results = run(model, inputs, training=False)
    head = fx["inference"]["head"]
    for name in ("cate", "kernels"):
        for level, (got, exp) in enumerate(zip(out[name], head[name])):
            close(got, exp, f"SOLOv2 head: {name} of level {level}")
    close(out["mask_feat"], head["mask_feat"], "SOLOv2 head: mask features")
    compare_instances(results, fx["inference"]["instances"], "final instances")


def compare_solo_targets(model, batch, expected, what):
    """The model's grid targets of the batch against the reference's (per level: labels, rows
    (image, cell, gt) in order, mask targets at stride 4)."""
    images = model.preprocess_image(batch)
    gt = [x["instances"] for x in batch]
    padded = tuple(images.tensor.shape[-2:])
    targets, masks = model.assign(gt, padded)
    size = (padded[0] // 4, padded[1] // 4)
    for level, (t, e) in enumerate(zip(targets, expected)):
        equal(t.labels, e["labels"], f"{what}: level {level} cell classes")
        equal(t.pos, e["rows"], f"{what}: level {level} positives (image, cell, gt)")
        if len(t.pos):
            m = model.mask_targets(t, masks, gt, size, {})
            equal(m > 0.5, e["masks"], f"{what}: level {level} mask targets")  # from the GT


def test_parity_solov2_training_reference_rules(inputs, tmp_path, repo_root):
    fx = load_fixture("solov2")
    opts = ["MODEL.SOLO.TARGET_RULES", "reference"]
    model = project_model("solov2", fx, tmp_path, repo_root, opts)
    model.train()
    batch = parity_batched_inputs(inputs, training=True)
    compare_solo_targets(model, batch, fx["training"]["targets"], "reference rules")
    compare_losses(model(batch), fx["training"]["losses"])


def test_parity_solov2_paper_rules_differ_where_the_rules_differ(inputs, tmp_path, repo_root):
    """With the default (paper) rules the fixture's shared cell (image 0, level 0: instances 0
    and 2) has one positive, the later instance; every other positive and every class is the
    reference's; the mask targets differ (image 0 is 90 x 70: AdelaiDet rescales it to 23 x 18,
    not x1/4 of the padded 96 x 96)."""
    fx = load_fixture("solov2")
    model = project_model("solov2", fx, tmp_path, repo_root)
    batch = parity_batched_inputs(inputs, training=True)
    images = model.preprocess_image(batch)
    gt = [x["instances"] for x in batch]
    padded = tuple(images.tensor.shape[-2:])
    targets, masks = model.assign(gt, padded)
    ref = fx["training"]["targets"]
    shared = 0
    for level, (t, e) in enumerate(zip(targets, ref)):
        equal(t.labels, e["labels"], f"paper rules: level {level} cell classes")
        rows = {}
        for b, cell, g in e["rows"].tolist():  # the later instance keeps a shared cell
            shared += (b, cell) in rows
            rows[(b, cell)] = g
        paper = sorted([b, c, g] for (b, c), g in rows.items())
        assert t.pos.tolist() == paper, f"paper rules: level {level} positives"
    assert shared == 1
    size, cache = (padded[0] // 4, padded[1] // 4), {}
    for level, (t, e) in enumerate(zip(targets, ref)):
        if len(t.pos) == 0:
            continue
        paper = dict(zip(map(tuple, t.pos.tolist()), model.mask_targets(t, masks, gt, size, cache)))
        for row, expected in zip(map(tuple, e["rows"].tolist()), e["masks"]):
            if row in paper:
                assert not torch.equal(
                    paper[row] > 0.5, expected
                ), f"level {level} {row}: same mask"
