"""Parity with the reference implementation of Mask Transfiner, SysCV/transfiner.

``tests/fixtures/parity/transfiner.pt`` holds what the reference's own RoI heads (its edited
detectron2 v0.5 pooler and mask head) computed for fixed FPN features (regenerated here by the
same deterministic rule, checked by checksums) and fixed boxes, with every parameter set by
``instseg_d2.parity.parity_tensor`` (written by ``tools/parity/transfiner.py``, which records
the reference commit). The project's ``TransfinerROIHeads`` loads the same weights in the
reference's names through the converter of reference checkpoints and must give:

* at inference (3 detections in 2 images): the same coarse masks and incoherence maps, the same
  quadtree nodes at every level (exactly), the same refined node values and final 112 x 112
  masks;
* in training (5 fg proposals): the same mask, incoherence, semantic and boundary losses, the
  same training nodes and refined instances (exactly), incoherent and boundary targets; and,
  when no instance has nodes, the same refinement loss (with nodes, both implementations draw
  them at random, so that loss is not compared). The transformer's dropout is off on both sides.
"""

import math
import os

import pytest
import torch
from torch import nn

from instseg_d2.parity import (
    assert_parity,
    load_reference_weights,
    parity_reference_state,
    parity_tensor,
    unpack_bits,
)

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "parity", "transfiner.pt")
SIZES = (28, 56, 112)
LOSSES = {  # project name: reference name
    "loss_mask": "loss_mask",
    "loss_incoherent": "loss_mask_uncertain",
    "loss_semantic": "loss_semantic",
    "loss_boundary": "loss_bound",
}


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, weights_only=False)


@pytest.fixture(scope="module")
def features(fixture):
    feats = {k: 10 * parity_tensor(f"inputs.{k}", (math.prod(s),)).view(s)
             for k, s in fixture["feature_shapes"].items()}  # fmt: skip
    for k, v in feats.items():  # the generator's features, regenerated
        assert float(v.double().abs().sum()) == pytest.approx(
            float(fixture["feature_checksums"][k]), rel=1e-9
        )
    return feats


@pytest.fixture(scope="module")
def project_heads(fixture):
    """The project's TransfinerROIHeads with the fixture's config keys; its mask head's
    ``layers`` and refinement transformer record their outputs in ``heads.record``."""
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.roi_heads import build_roi_heads

    from instseg_d2.plugins import get_full_cfg

    cfg = get_full_cfg()
    cfg.merge_from_list(fixture["common_opts"] + fixture["project_opts"] + ["MODEL.DEVICE", "cpu"])
    shapes = {k: ShapeSpec(channels=s[1], stride=2 ** int(k[1:]))
              for k, s in fixture["feature_shapes"].items()}  # fmt: skip
    heads = build_roi_heads(cfg, shapes)
    head, layers = heads.mask_head, heads.mask_head.layers

    def recorded_layers(x):
        heads.record["layers"] = layers(x)
        return heads.record["layers"]

    head.layers = recorded_layers
    head.refiner.transformer.register_forward_hook(
        lambda module, inputs, output: heads.record["transformer"].append(output)
    )
    groups = head.refiner._groups

    def recorded_groups(lengths):  # the instances of each transformer call, in call order
        heads.record["groups"] = groups(lengths)
        return heads.record["groups"]

    head.refiner._groups = recorded_groups
    return heads


def load_run(heads, fixture, run, folder):
    """Set the parity weights of ``run`` (reference names, loaded as a checkpoint file)."""
    from transfiner_d2.checkpoint import convert_reference_state_dict

    weights = parity_reference_state(
        fixture["template"], convert_reference_state_dict, fixture["runs"][run]["overrides"]
    )
    load_reference_weights(nn.ModuleDict({"roi_heads": heads}), weights, folder)
    heads.record = {"transformer": []}
    return heads


def nodes_of(incoherence, thresholds):
    """Per level, (box index, row-major cell) of the project's node selection."""
    from transfiner_d2.quadtree import node_masks

    return [m.nonzero(as_tuple=True) for m in node_masks(incoherence, SIZES, thresholds)]


def assert_same_nodes(name, mine, ref):
    for level, ((box, cell), (rbox, rcell)) in enumerate(zip(mine, ref)):
        assert box.tolist() == rbox.tolist(), f"{name} level {level}: boxes of the nodes"
        assert cell.tolist() == rcell.tolist(), f"{name} level {level}: cells of the nodes"


def test_inference_equals_reference(fixture, features, project_heads, tmp_path):
    from detectron2.structures import Boxes, Instances

    ref = fixture["runs"]["inference"]["inference"]
    heads = load_run(project_heads, fixture, "inference", str(tmp_path))
    heads.eval()
    instances = []
    for det in fixture["detections"]:
        inst = Instances(tuple(fixture["image_size"]))
        inst.pred_boxes = Boxes(det["boxes"].clone())
        inst.pred_classes = det["classes"].clone()
        inst.scores = torch.ones(len(det["classes"]))
        instances.append(inst)
    with torch.no_grad():
        results = heads.forward_with_given_boxes(dict(features), instances)

    coarse, incoherence, _ = heads.record["layers"]
    assert_parity("transfiner coarse mask logits", coarse, ref["coarse"])
    incoherence = incoherence.sigmoid()
    assert_parity("transfiner incoherence", incoherence, ref["incoherence"])
    nodes = nodes_of(incoherence, heads.mask_head.refiner.test_thresholds)
    assert_same_nodes("inference", nodes, ref["nodes"])

    # one transformer call per group of instances: (group, 196 + padded nodes per level)
    calls, groups = heads.record["transformer"], heads.record["groups"]
    assert len(calls) == len(groups)
    num = sum(len(g) for g in groups)
    counts = torch.stack([torch.bincount(b, minlength=num) for b, _ in nodes], 1)  # (R, levels)
    values = {}  # instance -> its refined node values, per level
    for out, group in zip(calls, groups):
        per_level = out[:, 14 * 14 :].split(counts[group].max(0).values.tolist(), dim=1)
        for row, r in enumerate(group.tolist()):
            values[r] = [vals[row, : int(n)] for vals, n in zip(per_level, counts[r])]
    for level, rv in enumerate(ref["refined"]):
        mine = torch.cat([values[r][level] for r in range(num)])
        assert_parity(f"transfiner refined values, level {level}", mine, rv)
    masks = torch.cat([r.pred_masks[:, 0] for r in results])
    assert_parity("transfiner final masks", masks, torch.cat(ref["masks"]))


def _training_losses(fixture, features, heads):
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    heads.train()
    heads.mask_head.refiner.transformer.eval()  # no dropout, as the reference side
    proposals, targets = [], []
    size = tuple(fixture["image_size"])
    for prop, packed, classes in zip(
        fixture["proposals"], fixture["gt_masks"], fixture["gt_classes"]
    ):
        p = Instances(size)
        p.proposal_boxes = Boxes(prop["boxes"].clone())
        p.gt_classes = classes[prop["gt_index"]].clone()
        p.gt_index = prop["gt_index"].clone()
        masks = unpack_bits(packed)
        p.gt_masks = BitMasks(masks[prop["gt_index"]])  # as label_and_sample_proposals gives
        proposals.append(p)
        t = Instances(size)
        t.gt_masks = BitMasks(masks)
        t.gt_classes = classes.clone()
        targets.append(t)
    with EventStorage():
        losses = heads._forward_mask(dict(features), proposals, targets)
    return losses, proposals, targets


def test_training_equals_reference(fixture, features, project_heads, tmp_path):
    from transfiner_d2.quadtree import node_masks, sample_train_nodes
    from transfiner_d2.targets import MaskTargets, boundary_map

    ref = fixture["runs"]["train"]["train"]
    heads = load_run(project_heads, fixture, "train", str(tmp_path))
    losses, proposals, targets = _training_losses(fixture, features, heads)
    for mine, theirs in LOSSES.items():
        assert_parity(f"transfiner {mine}", losses[mine], ref["losses"][theirs])

    coarse, incoherence, _ = heads.record["layers"]
    assert_parity("transfiner train coarse mask logits", coarse, ref["coarse"])
    incoherence = incoherence.sigmoid()
    assert_parity("transfiner train incoherence", incoherence, ref["incoherence"])
    refiner = heads.mask_head.refiner
    assert_same_nodes("training", nodes_of(incoherence, refiner.train_thresholds), ref["nodes"])
    masks = node_masks(incoherence, SIZES, refiner.train_thresholds)
    _, valid = sample_train_nodes(masks, refiner.train_nodes_per_level, refiner.train_min_nodes)
    assert valid.tolist() == ref["valid"]

    head = heads.mask_head
    tg = MaskTargets(proposals, targets, head.incoherent_gt_downsample, head.incoherent_gt_eps)
    incoherent = tg.crop_incoherent(28, head.incoherent_roi_thresh)
    assert torch.equal(incoherent.bool(), ref["gt_incoherent"].bool())
    boundary = boundary_map(tg.crop_masks(28), head.boundary_width)
    assert torch.equal(boundary.bool(), ref["gt_boundary"].bool())


def test_context_refinement_loss_equals_reference(fixture, features, project_heads, tmp_path):
    """No instance has nodes: the refinement loss is the L1 of the 14 x 14 context tokens."""
    ref = fixture["runs"]["no_nodes"]["train"]
    assert not any(ref["valid"]) and all(len(b) == 0 for b, _ in ref["nodes"])
    heads = load_run(project_heads, fixture, "no_nodes", str(tmp_path))
    losses, _, _ = _training_losses(fixture, features, heads)
    assert_parity("transfiner loss_refine (context)", losses["loss_refine"],
                  ref["losses"]["loss_mask_refine"])  # fmt: skip
    assert_parity("transfiner loss_incoherent (no nodes)", losses["loss_incoherent"],
                  ref["losses"]["loss_mask_uncertain"])  # fmt: skip
