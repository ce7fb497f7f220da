"""Golden parity fixtures from AdelaiDet's FCOS, CondInst, BlendMask and SOLOv2.

For each model this builds the **reference** model (AdelaiDet's own code, imported from the clone
given with ``--reference``) in a small configuration (ResNet-18, FPN of 64 channels, 32 for
SOLOv2, small heads, 5 classes), sets every parameter to ``instseg_d2.parity.parity_tensor(<project name>, shape)``
(the project name is the reference name as the project's converter maps it; a few biases are
overridden so that detections and masks are not trivial), runs inference and one training
forward on two fixed images of different sizes with fixed ground truth, and writes what it saw,
stage by stage, to ``tests/fixtures/parity/adelaidet_<method>.pt`` (inputs to
``adelaidet_inputs.pt``). ``tests/test_parity_adelaidet.py`` rebuilds the project's models with
the same weights and compares. No weights are stored.

    PYTHONPATH=. python tools/parity/adelaidet.py --reference /path/to/AdelaiDet [--only solov2]

This script is the only place that imports reference code. AdelaiDet's compiled ``adet._C``
(used by ops these models do not need) and ``skimage`` (BoxInst only) are replaced by empty
modules when they cannot be imported. See tools/parity/README.md.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import types
from typing import Dict

import torch

from adelaidet_runners import run_fcos_family, run_solov2  # tools/parity/, next to this file

METHODS = ("fcos", "condinst", "blendmask", "solov2")
NUM_CLASSES = 5  # the shapes dataset's, so that the tests can build the shapes configs
PIXEL_MEAN = [103.530, 116.280, 123.675]  # configs/Base-Shapes.yaml
PIXEL_STD = [57.375, 57.120, 58.395]
FIXTURE_DIR = os.path.join("tests", "fixtures", "parity")

# The reference's configuration per method (AdelaiDet key names), on top of adet's defaults.
_BACKBONE = [
    "MODEL.DEVICE", "cpu",
    "MODEL.PIXEL_MEAN", str(PIXEL_MEAN),
    "MODEL.PIXEL_STD", str(PIXEL_STD),
    "MODEL.BACKBONE.FREEZE_AT", "0",
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
]  # fmt: skip
_FCOS = _BACKBONE + [
    "MODEL.BACKBONE.NAME", "build_fcos_resnet_fpn_backbone",
    "MODEL.RESNETS.OUT_FEATURES", "['res3', 'res4', 'res5']",
    "MODEL.FPN.IN_FEATURES", "['res3', 'res4', 'res5']",
    "MODEL.FPN.OUT_CHANNELS", "64",  # GroupNorm(32) of the towers: 2 channels per group, as
    # P7 of a single padded 64 x 96 image is 1 x 1
    "MODEL.PROPOSAL_GENERATOR.NAME", "FCOS",
    "MODEL.FCOS.NUM_CLASSES", str(NUM_CLASSES),
    "MODEL.FCOS.NUM_CLS_CONVS", "2",
    "MODEL.FCOS.NUM_BOX_CONVS", "2",
    "MODEL.FCOS.SIZES_OF_INTEREST", "[16, 32, 64, 128]",
]  # fmt: skip
REFERENCE_CONFIGS = {
    "fcos": _FCOS + ["MODEL.META_ARCHITECTURE", "OneStageDetector", "MODEL.MASK_ON", "False"],
    "condinst": _FCOS + [
        "MODEL.META_ARCHITECTURE", "CondInst",
        "MODEL.MASK_ON", "True",
        "MODEL.FCOS.THRESH_WITH_CTR", "True",
        "MODEL.FCOS.USE_SCALE", "True",
        "MODEL.CONDINST.MAX_PROPOSALS", "-1",
        "MODEL.CONDINST.MASK_HEAD.CHANNELS", "4",
        "MODEL.CONDINST.MASK_BRANCH.OUT_CHANNELS", "4",
        "MODEL.CONDINST.MASK_BRANCH.CHANNELS", "32",
        "MODEL.CONDINST.MASK_BRANCH.NUM_CONVS", "2",
        "MODEL.CONDINST.MASK_BRANCH.SEMANTIC_LOSS_ON", "True",
    ],
    "blendmask": _FCOS + [
        "MODEL.META_ARCHITECTURE", "BlendMask",
        "MODEL.PANOPTIC_FPN.COMBINE.ENABLED", "False",
        "MODEL.MASK_ON", "True",
        "MODEL.FCOS.THRESH_WITH_CTR", "True",
        "MODEL.FCOS.USE_SCALE", "False",
        "MODEL.BLENDMASK.ATTN_SIZE", "7",
        "MODEL.BLENDMASK.BOTTOM_RESOLUTION", "28",
        "MODEL.BASIS_MODULE.CONVS_DIM", "32",
        "MODEL.BASIS_MODULE.NUM_CONVS", "2",
        "MODEL.BASIS_MODULE.NORM", "BN",
        "MODEL.BASIS_MODULE.LOSS_ON", "True",
        "MODEL.BASIS_MODULE.NUM_CLASSES", str(NUM_CLASSES),
    ],
    "solov2": _BACKBONE + [
        "MODEL.META_ARCHITECTURE", "SOLOv2",
        "MODEL.MASK_ON", "True",
        "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
        "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']",
        "MODEL.FPN.IN_FEATURES", "['res2', 'res3', 'res4', 'res5']",
        "MODEL.FPN.OUT_CHANNELS", "32",
        "MODEL.SOLOV2.NUM_CLASSES", str(NUM_CLASSES),
        "MODEL.SOLOV2.FPN_SCALE_RANGES", "((1, 24), (12, 48), (24, 96), (48, 192), (96, 512))",
        "MODEL.SOLOV2.NUM_GRIDS", "[12, 10, 8, 6, 4]",
        "MODEL.SOLOV2.INSTANCE_IN_CHANNELS", "32",
        "MODEL.SOLOV2.INSTANCE_CHANNELS", "32",
        "MODEL.SOLOV2.NUM_INSTANCE_CONVS", "2",
        "MODEL.SOLOV2.MASK_IN_CHANNELS", "32",
        "MODEL.SOLOV2.MASK_CHANNELS", "32",
        "MODEL.SOLOV2.NUM_KERNELS", "32",
        "MODEL.SOLOV2.NUM_MASKS", "32",
    ],
}  # fmt: skip

# Parameters (project names) set to constants instead of the parity rule, so that a moderate
# number of locations / cells pass the score thresholds and boxes have a size.
_FCOS_HEAD = "proposal_generator.fcos_head"


def _fcos_overrides(cls_bias: float, use_scale: bool) -> Dict:
    out = {f"{_FCOS_HEAD}.cls_logits.bias": cls_bias, f"{_FCOS_HEAD}.bbox_pred.bias": 1.5}
    if use_scale:  # the rule would give scales ~ N(0, 0.1): tiny boxes
        out.update({f"{_FCOS_HEAD}.scales.{i}.scale": 1.0 for i in range(5)})
    return out


# cls_logits.bias: about 10-20 detections per image (the logits are ~ N(bias, 0.6)); CondInst and
# BlendMask threshold cls * ctrness (ctrness ~ 0.4), hence a higher bias.
OVERRIDES = {
    "fcos": _fcos_overrides(-4.0, use_scale=True),
    "condinst": _fcos_overrides(-3.4, use_scale=True),
    "blendmask": _fcos_overrides(-3.4, use_scale=False),
    "solov2": {"head.cate_branch.pred.bias": -3.3},
}


# ------------------------------------------------------------------------------------ inputs
def _ellipse(h, w, cx, cy, rx, ry):
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((x + 0.5 - cx) / rx) ** 2 + ((y + 0.5 - cy) / ry) ** 2 <= 1


def _rect(h, w, x0, y0, x1, y1):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


_COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (40, 200, 200)]


def make_inputs() -> Dict:
    """Two images of different sizes (not multiples of 4 or 32) and their ground truth: the
    instances painted in a colour per class over a gradient, plus seeded noise. Image 0's
    instances 0 and 2 have their centres in the same grid cell of SOLOv2's first level;
    instance 2 lies inside instance 0 (overlapping masks)."""
    g = torch.Generator().manual_seed(13)
    # heights above 3/4 of the batch's padded 96: AdelaiDet's SOLOv2 upsamples its stride-4 masks
    # by ceil(h / (96 / 4)), which is 4 only then (the project always uses 4)
    sizes = [(90, 70), (78, 66)]
    out_sizes = [(72, 56), (62, 53)]  # "height" / "width" the outputs are resized to
    masks = [
        [
            _ellipse(90, 70, 30.3, 25.6, 11.2, 9.3),
            _rect(90, 70, 45, 50, 67, 82),
            _ellipse(90, 70, 31.0, 28.4, 6.3, 5.2),
        ],
        [
            _ellipse(78, 66, 20.4, 40.2, 12.1, 12.1),
            _rect(78, 66, 35, 8, 61, 31),
            _ellipse(78, 66, 45.3, 55.1, 5.2, 8.3),
        ],
    ]
    classes = [[1, 3, 0], [2, 4, 1]]
    images, gt = [], []
    for (h, w), ms, cs in zip(sizes, masks, classes):
        m = torch.stack(ms)
        img = torch.linspace(40, 160, w).expand(3, h, w).clone()
        for mi, c in zip(m, cs):
            img[:, mi] = torch.tensor(_COLOURS[c], dtype=torch.float32)[:, None]
        img += 20 * torch.randn(3, h, w, generator=g)
        images.append(img.round().clamp(0, 255).to(torch.uint8))
        boxes = []
        for mi in m:
            ys, xs = torch.nonzero(mi, as_tuple=True)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        gt.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                "classes": torch.tensor(cs, dtype=torch.int64),
                "masks": m,
            }
        )
    return {"images": images, "out_sizes": out_sizes, "gt": gt}


# ---------------------------------------------------------------------------- the reference
def import_reference(path: str):
    """Import the ``adet`` package of the AdelaiDet clone at ``path`` (without changing
    sys.path); its compiled ops and BoxInst's skimage are stubbed when missing."""
    init = os.path.join(path, "adet", "__init__.py")
    if not os.path.isfile(init):
        raise SystemExit(f"--reference {path!r}: no adet/__init__.py (not an AdelaiDet clone)")
    sys.modules.setdefault("adet._C", types.ModuleType("adet._C"))
    if importlib.util.find_spec("skimage") is None:
        skimage = types.ModuleType("skimage")
        skimage.color = types.ModuleType("skimage.color")
        sys.modules["skimage"] = skimage
    spec = importlib.util.spec_from_file_location(
        "adet", init, submodule_search_locations=[os.path.dirname(init)]
    )
    adet = importlib.util.module_from_spec(spec)
    sys.modules["adet"] = adet
    spec.loader.exec_module(adet)
    return adet


def reference_commit(path: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build_reference(method: str):
    from adet.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_list(REFERENCE_CONFIGS[method])
    return build_model(cfg)


# ----------------------------------------------------------------------------- the weights
def project_name_map(method: str, params: Dict) -> Dict:
    """Reference name -> project name through the project's converter, computed in a child
    process: the project registers ``FCOS``, ``CondInst``, ``BlendMask`` and
    ``build_fcos_resnet_fpn_backbone`` under the same names as AdelaiDet, so the two cannot be
    imported into one process."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--project-names", method],
        input=json.dumps({k: [list(s), d] for k, (s, d) in params.items()}),
        capture_output=True, text=True, env=env, cwd=root,
    )  # fmt: skip
    if res.returncode != 0:
        raise SystemExit(f"mapping the names through the project's converter failed:\n{res.stderr}")
    return json.loads(res.stdout)


def _print_project_names(method: str) -> None:
    """Child process of :func:`project_name_map` (imports the project, never the reference)."""
    from instseg_d2.parity import parity_name_map

    import importlib

    module = {
        "fcos": "instseg_d2.modeling.fcos.checkpoint",
        "condinst": "condinst_d2.checkpoint",
        "blendmask": "blendmask_d2.checkpoint",
        "solov2": "solo_d2.checkpoint",
    }[method]
    convert = importlib.import_module(module).convert_reference_state_dict
    params = json.loads(sys.stdin.read())
    print(json.dumps(parity_name_map(params, convert)))


def set_parity_weights(model, method: str) -> Dict:
    """Set the reference model's parameters by the parity rule; returns the
    ``{name: (shape, dtype)}`` of its state dict (what the tests rebuild the state dict from)."""
    from instseg_d2.parity import parity_reference_state

    params = {
        k: (list(v.shape), str(v.dtype).replace("torch.", ""))
        for k, v in model.state_dict().items()
    }
    names = project_name_map(method, params)
    state = parity_reference_state(params, names, OVERRIDES[method])
    missing, unexpected = model.load_state_dict(state, strict=False)
    dropped = sorted(k for k, v in names.items() if v is None)
    if sorted(missing) != dropped or unexpected:
        raise SystemExit(f"{method}: unexpected state dict mismatch {missing} {unexpected}")
    return params


# ------------------------------------------------------------------------------------- main
def generate(method: str, inputs: Dict, commit: str) -> Dict:
    torch.manual_seed(0)
    model = build_reference(method)
    params = set_parity_weights(model, method)
    if method == "solov2":
        result = run_solov2(model, inputs)
    else:
        result = run_fcos_family(model, method, inputs)
    result.update(
        method=method,
        reference={
            "repository": "aim-uofa/AdelaiDet",
            "commit": commit,
            "config": list(REFERENCE_CONFIGS[method]),
        },
        parameters=params,
        overrides=dict(OVERRIDES[method]),
    )
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", help="path of a clone of aim-uofa/AdelaiDet")
    parser.add_argument("--only", default=",".join(METHODS), help="comma-separated methods")
    parser.add_argument("--output-dir", default=FIXTURE_DIR)
    parser.add_argument("--project-names", help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args(argv)
    if args.project_names:
        return _print_project_names(args.project_names)
    if not args.reference:
        parser.error("--reference is required")
    methods = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--only: unknown method(s) {unknown}; choose from {list(METHODS)}")

    torch.set_num_threads(1)
    import_reference(args.reference)
    commit = reference_commit(args.reference)
    inputs = make_inputs()
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, "adelaidet_inputs.pt")
    torch.save(inputs, path)
    print(f"wrote {path} ({os.path.getsize(path) / 1e3:.0f} kB)")
    for method in methods:
        path = os.path.join(args.output_dir, f"adelaidet_{method}.pt")
        torch.save(generate(method, inputs, commit), path)
        print(f"wrote {path} ({os.path.getsize(path) / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
