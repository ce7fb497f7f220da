"""Writes tests/fixtures/parity/sparseinst.pt: what hustvl/SparseInst's own code computes for a
small model (tiny ResNet, 32-channel encoder, 8 queries, 3 classes) with deterministic weights,
for its G-IAM and IAM decoders.

    python tools/parity/sparseinst.py --reference <clone of hustvl/SparseInst>

For each decoder the reference's SparseInst (its meta-architecture, encoder, decoder, matcher
and criterion, built from its config keys) gets every parameter from
``instseg_d2.parity.parity_reference_state`` (through ``sparseinst_d2``'s converter of
reference checkpoints), then runs one training forward + backward and one inference on two
fixed images with ground truth. Recorded: the encoder output, the decoder outputs (logits,
mask logits, objectness, activation maps), the Hungarian matching, the four weighted losses,
the gradients of a few parameters and the final instances; plus the inputs and the reference's
parameter names and shapes (no weights). ``tests/test_parity_sparseinst.py`` compares the
project's model with them.
"""

import os
import sys

import torch

from harness import main, pack_bits, state_template

DECODERS = ("GroupIAMDecoder", "BaseIAMDecoder")
NUM_CLASSES = 3
IAM_GAIN, IAM_BIAS, CLS_GAIN = 6.0, -1.0, 4.0  # see overrides_for

# Config keys that both implementations read with the same meaning (and names).
COMMON_OPTS = [
    "MODEL.BACKBONE.NAME", "build_resnet_backbone",
    "MODEL.BACKBONE.FREEZE_AT", "0",
    "MODEL.RESNETS.DEPTH", "50",
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "16",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "16",
    "MODEL.RESNETS.NUM_GROUPS", "1",
    "MODEL.RESNETS.WIDTH_PER_GROUP", "4",
    "MODEL.RESNETS.NORM", "FrozenBN",
    "MODEL.RESNETS.STRIDE_IN_1X1", "False",
    "MODEL.RESNETS.OUT_FEATURES", "['res3', 'res4', 'res5']",
    "MODEL.PIXEL_MEAN", "[123.675, 116.28, 103.53]",
    "MODEL.PIXEL_STD", "[58.395, 57.12, 57.375]",
    "INPUT.FORMAT", "RGB",
    "INPUT.MASK_FORMAT", "bitmask",
    "MODEL.SPARSE_INST.ENCODER.NAME", "InstanceContextEncoder",
    "MODEL.SPARSE_INST.ENCODER.NUM_CHANNELS", "32",
    "MODEL.SPARSE_INST.DECODER.NUM_MASKS", "8",
    "MODEL.SPARSE_INST.DECODER.NUM_CLASSES", str(NUM_CLASSES),
    "MODEL.SPARSE_INST.DECODER.KERNEL_DIM", "16",
    "MODEL.SPARSE_INST.DECODER.GROUPS", "4",  # the reference's G-IAM hard-codes 4
    "MODEL.SPARSE_INST.DECODER.INST.DIM", "32",
    "MODEL.SPARSE_INST.DECODER.INST.CONVS", "2",
    "MODEL.SPARSE_INST.DECODER.MASK.DIM", "32",
    "MODEL.SPARSE_INST.DECODER.MASK.CONVS", "2",
]  # fmt: skip

# Gradients recorded (reference names): the decoder's heads, its first conv, the encoder's
# C3 lateral (the reference lists its levels coarsest first) and fusion, a backbone conv.
GRAD_NAMES = (
    "decoder.inst_branch.iam_conv.weight",
    "decoder.inst_branch.iam_conv.bias",
    "decoder.inst_branch.cls_score.weight",
    "decoder.inst_branch.objectness.weight",
    "decoder.inst_branch.inst_convs.0.bias",
    "decoder.mask_branch.projection.weight",
    "encoder.fpn_laterals.2.weight",
    "encoder.fusion.bias",
    "backbone.res4.0.conv2.weight",
)


def overrides_for(template: dict) -> dict:
    """Project-named parameters set apart from the rule so that the outputs are varied:
    activation maps steeper than the rule's (weights x IAM_GAIN, bias IAM_BIAS) so that each
    query pools its own pixels, and class weights x CLS_GAIN, so that the queries' classes
    differ."""
    from instseg_d2.parity import parity_tensor

    def scaled(name, gain):
        return parity_tensor(name, template[name][0]) * gain

    return {
        "decoder.inst_branch.iam_conv.weight": scaled(
            "decoder.inst_branch.iam_conv.weight", IAM_GAIN
        ),
        "decoder.inst_branch.iam_conv.bias": IAM_BIAS,
        "decoder.inst_branch.cls_score.weight": scaled(
            "decoder.inst_branch.cls_score.weight", CLS_GAIN
        ),
    }


def opts_for(decoder: str):
    return COMMON_OPTS + ["MODEL.SPARSE_INST.DECODER.NAME", decoder]


def make_inputs():
    """Two images of different sizes (the second needs padding), the first with an original
    size larger than its input (masks are resized up at inference), with 3 and 2 objects
    (rectangles and an ellipse; two of them overlap)."""
    g = torch.Generator().manual_seed(2022)
    specs = [((64, 64), (80, 80), 3), ((72, 80), (72, 80), 2)]
    inputs = []
    for (h, w), (oh, ow), n in specs:
        image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        masks = torch.zeros(n, h, w, dtype=torch.bool)
        for k in range(n):
            bh, bw = (int(torch.randint(12, 30, (1,), generator=g)) for _ in range(2))
            y0 = int(torch.randint(0, h - bh, (1,), generator=g))
            x0 = int(torch.randint(0, w - bw, (1,), generator=g))
            if k == n - 1:  # an ellipse in the box
                yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
                cy, cx = y0 + (bh - 1) / 2, x0 + (bw - 1) / 2
                masks[k] = ((yy - cy) / (bh / 2)) ** 2 + ((xx - cx) / (bw / 2)) ** 2 <= 1
            else:
                masks[k, y0 : y0 + bh, x0 : x0 + bw] = True
        classes = torch.randint(0, NUM_CLASSES, (n,), generator=g)
        inputs.append(
            {"image": image, "height": oh, "width": ow, "gt_classes": classes, "gt_masks": masks}
        )
    return inputs


# ------------------------------------------------------------------------ project side
def generate(ref, args) -> dict:
    from instseg_d2.parity import parity_reference_state
    from sparseinst_d2.checkpoint import convert_reference_state_dict

    inputs = make_inputs()
    fixture = {
        "reference": {"repository": "hustvl/SparseInst", "commit": ref.commit},
        "inputs": [dict(x, gt_masks=pack_bits(x["gt_masks"])) for x in inputs],
        "decoders": {},
    }
    for decoder in DECODERS:
        opts = opts_for(decoder)
        template = ref("names", {"opts": opts})["template"]
        overrides = overrides_for(template)
        weights = parity_reference_state(template, convert_reference_state_dict, overrides)
        out = ref(
            "run",
            {"opts": opts, "weights": weights, "inputs": inputs, "grad_names": GRAD_NAMES},
        )
        _summary(decoder, out)
        for inst in out["instances"]:
            inst["pred_masks"] = pack_bits(inst["pred_masks"])
        fixture["decoders"][decoder] = {
            "opts": opts,
            "template": template,
            "overrides": overrides,
            **out,
        }
    return fixture


def _summary(decoder, out):
    print(f"{decoder}: losses", {k: round(float(v), 5) for k, v in out["losses"].items()})
    print("  matching", [(p.tolist(), t.tolist()) for p, t in out["indices"]])
    for i, inst in enumerate(out["instances"]):
        print(
            f"  image {i}: {len(inst['scores'])} instances, scores "
            f"{[round(float(s), 3) for s in inst['scores']]}, classes "
            f"{inst['pred_classes'].tolist()}, mask areas {inst['pred_masks'].sum((1, 2)).tolist()}"
        )


# ---------------------------------------------------------------------- reference side
def _reference_model(opts, reference):
    """The reference's SparseInst, its package imported without its ``__init__`` (which
    imports its PVT / CSP backbones and their timm dependency, unused here)."""
    import types

    if "sparseinst" not in sys.modules:
        pkg = types.ModuleType("sparseinst")
        pkg.__path__ = [os.path.join(reference, "sparseinst")]
        sys.modules["sparseinst"] = pkg
    from detectron2.config import get_cfg
    from sparseinst.config import add_sparse_inst_config
    from sparseinst.sparseinst import SparseInst

    cfg = get_cfg()
    add_sparse_inst_config(cfg)
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = "cpu"  # its config forces cuda
    return SparseInst(cfg)


def stage_names(payload, reference):
    return {"template": state_template(_reference_model(payload["opts"], reference))}


def _batched_inputs(inputs):
    from detectron2.structures import BitMasks, Instances

    out = []
    for x in inputs:
        inst = Instances(tuple(x["image"].shape[1:]))
        inst.gt_classes = x["gt_classes"].clone()
        inst.gt_masks = BitMasks(x["gt_masks"].clone())
        out.append({"image": x["image"].clone(), "height": x["height"], "width": x["width"],
                    "instances": inst})  # fmt: skip
    return out


def stage_run(payload, reference):
    torch.manual_seed(0)
    model = _reference_model(payload["opts"], reference)
    model.load_state_dict(payload["weights"], strict=True)
    rec = {}

    def keep(name, fn=lambda o: o):
        return lambda module, inputs, output: rec.__setitem__(name, fn(output))

    model.encoder.register_forward_hook(keep("encoder", lambda o: o.detach().clone()))
    model.decoder.inst_branch.register_forward_hook(keep("iam", lambda o: o[3].detach().clone()))
    model.decoder.register_forward_hook(
        keep("decoder", lambda o: {k: v.detach().clone() for k, v in o.items()})
    )
    model.criterion.matcher.register_forward_hook(
        keep("indices", lambda o: [(p.clone(), t.clone()) for p, t in o])
    )

    model.train()
    losses = model(_batched_inputs(payload["inputs"]))
    sum(losses.values()).backward()
    params = dict(model.named_parameters())
    out = {
        "encoder": rec["encoder"],
        "pred_logits": rec["decoder"]["pred_logits"],
        "pred_masks": rec["decoder"]["pred_masks"],
        "pred_scores": rec["decoder"]["pred_scores"],
        "iam": rec["iam"],
        "indices": rec["indices"],
        "losses": {k: v.detach().clone() for k, v in losses.items()},
        "grads": {k: params[k].grad.clone() for k in payload["grad_names"]},
    }
    model.eval()
    with torch.no_grad():
        results = model(_batched_inputs(payload["inputs"]))
    out["instances"] = [
        {
            "scores": r["instances"].scores.clone(),
            "pred_classes": r["instances"].pred_classes.clone(),
            "pred_masks": r["instances"].pred_masks.clone(),
        }
        for r in results
    ]
    return out


if __name__ == "__main__":
    main(__file__, __doc__, "sparseinst.pt", generate, {"names": stage_names, "run": stage_run})
