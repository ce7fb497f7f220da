"""Parity with the reference implementation, hustvl/SparseInst.

``tests/fixtures/parity/sparseinst.pt`` holds what the reference's own code computed (written
by ``tools/parity/sparseinst.py``, which records the reference commit) for a small model
(tiny ResNet-50, 32-channel encoder, 8 queries, 3 classes) whose every parameter follows
``instseg_d2.parity.parity_tensor``, on two fixed images with ground truth, for the G-IAM and
IAM decoders. Here the project's model is built with the same config keys, loads the same
weights in the reference's names through ``MODEL.WEIGHTS``'s path (the converter of reference
checkpoints), runs the same inputs and must give the same encoder output, decoder outputs,
Hungarian matching (exactly), losses, gradients and final instances (classes and masks
exactly).
"""

import os

import pytest
import torch

from instseg_d2.parity import (
    assert_parity,
    load_reference_weights,
    parity_name_map,
    parity_reference_state,
    unpack_bits,
)

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "parity", "sparseinst.pt")


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, weights_only=False)


def batched_inputs(inputs):
    from detectron2.structures import BitMasks, Instances

    out = []
    for x in inputs:
        inst = Instances(tuple(x["image"].shape[1:]))
        inst.gt_classes = x["gt_classes"].clone()
        inst.gt_masks = BitMasks(unpack_bits(x["gt_masks"]))
        out.append({"image": x["image"].clone(), "height": x["height"], "width": x["width"],
                    "instances": inst})  # fmt: skip
    return out


def build(entry, folder):
    """The project's SparseInst with the fixture's config keys and the parity weights, in the
    reference's names, loaded as a checkpoint file."""
    from detectron2.modeling import build_model

    from instseg_d2.plugins import get_full_cfg
    from sparseinst_d2.checkpoint import convert_reference_state_dict

    cfg = get_full_cfg()
    cfg.merge_from_list(list(entry["opts"]))
    cfg.merge_from_list(["MODEL.META_ARCHITECTURE", "SparseInst", "MODEL.MASK_ON", "True",
                         "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])  # fmt: skip
    model = build_model(cfg)
    names = parity_name_map(entry["template"], convert_reference_state_dict)
    weights = parity_reference_state(entry["template"], names, entry["overrides"])
    load_reference_weights(model, weights, folder)
    return model, names


@pytest.mark.parametrize("decoder", ["GroupIAMDecoder", "BaseIAMDecoder"])
def test_sparseinst_equals_reference(fixture, decoder, tmp_path):
    entry = fixture["decoders"][decoder]
    torch.manual_seed(0)
    model, names = build(entry, str(tmp_path))
    rec = {}

    def keep(name, fn):
        return lambda module, inputs, output: rec.__setitem__(name, fn(output))

    model.encoder.register_forward_hook(keep("encoder", lambda o: o.detach()))
    model.decoder.register_forward_hook(
        keep("decoder", lambda o: {k: v.detach() for k, v in o.items()})
    )
    model.criterion.matcher.register_forward_hook(keep("indices", lambda o: o))

    model.train()
    losses = model(batched_inputs(fixture["inputs"]))
    sum(losses.values()).backward()

    assert_parity(f"{decoder} encoder", rec["encoder"], entry["encoder"])
    out = rec["decoder"]
    assert_parity(f"{decoder} pred_logits", out["pred_logits"], entry["pred_logits"])
    assert_parity(f"{decoder} pred_masks", out["pred_masks"], entry["pred_masks"])
    assert_parity(f"{decoder} objectness", out["pred_objectness"], entry["pred_scores"])
    assert_parity(f"{decoder} activation maps", out["pred_iam"], entry["iam"])
    for (p, t), (rp, rt) in zip(rec["indices"], entry["indices"]):
        assert p.tolist() == rp.tolist() and t.tolist() == rt.tolist()
    assert sorted(losses) == sorted(entry["losses"])
    for k, v in entry["losses"].items():
        assert_parity(f"{decoder} {k}", losses[k], v)
    params = dict(model.named_parameters())
    for ref_name, grad in entry["grads"].items():
        mine = params[names[ref_name]].grad
        assert_parity(f"{decoder} grad {ref_name}", mine.reshape(grad.shape), grad)

    model.eval()
    with torch.no_grad():
        results = model(batched_inputs(fixture["inputs"]))
    for r, ref in zip(results, entry["instances"]):
        inst = r["instances"]
        assert inst.pred_classes.tolist() == ref["pred_classes"].tolist()
        assert_parity(f"{decoder} scores", inst.scores, ref["scores"])
        assert torch.equal(inst.pred_masks, unpack_bits(ref["pred_masks"]))
