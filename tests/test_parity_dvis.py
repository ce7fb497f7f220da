"""Parity of DVIS's variational loss with the research code (jia2lin3yuan1/2020-instanceSeg).

``tests/fixtures/parity/dvis.pt`` (written by ``tools/parity/dvis.py``, which records the
research code's commit) holds what the research code computes on two tiny label maps with fixed
predictions: its targets (instance ids, the binary term's pixel weights) and its four weighted
loss terms with their gradients, for two settings. The project's model, configured with
``MODEL.DVIS.LOSS.PI_PAIRS "reference"`` and ``MS_NORMALIZATION "nonzero"`` (the research
code's pairs and Mumford-Shah normalisation), must give the same values; with its defaults
(the paper's foreground pairs, the mean over all pixels) it differs as documented, checked
below on hand-derived cases.
"""

import math
import os

import pytest
import torch

from instseg_d2.parity import assert_parity

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "parity", "dvis.pt")


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, weights_only=False)


def dvis_model(repo_root, opts=()):
    from detectron2.modeling import build_model

    from instseg_d2.plugins import get_full_cfg

    cfg = get_full_cfg()
    cfg.merge_from_file(os.path.join(repo_root, "configs", "DVIS", "shapes_DVIS_R_18.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.DVIS.NUM_CLASSES", "3"] + list(opts))
    return build_model(cfg), cfg


def targets(fixture):
    from dvis_d2.targets import label_targets

    size = tuple(fixture["z"].shape[-2:])
    return label_targets(fixture["masks"], [size] * len(fixture["masks"]), size, stride=1)


def test_targets_equal_research(fixture):
    """Instance ids (up to the numbering: the research code numbers by decreasing area) and
    the binary term's pixel weights ``clip(cbrt(HW / (area + 1)), 1, 10)``."""
    t = targets(fixture)
    ref_ids = fixture["ids"]
    for mine, ref in zip(t.ids, ref_ids):
        perm = {int(a): int(b) for a, b in zip(mine.flatten(), ref.flatten())}
        assert perm[0] == 0 and len(set(perm.values())) == len(perm)
        assert torch.equal(mine.clone().apply_(perm.get), ref)
    assert_parity("dvis pixel weights", t.weights, fixture["weights"], rtol=1e-6)


@pytest.mark.parametrize("setting", ["A", "B"])
def test_loss_terms_equal_research_with_its_switches(fixture, setting, repo_root):
    res = fixture["settings"][setting]
    window, center, dilation = fixture["pi_kernel"]
    model, cfg = dvis_model(repo_root, [
        "MODEL.DVIS.LOSS.PI_PAIRS", "reference",
        "MODEL.DVIS.LOSS.MS_NORMALIZATION", "nonzero",
        "MODEL.DVIS.LOSS.PI_INCLUDE_BACKGROUND", str(bool(res["config"]["pi_hasBG"])),
        "MODEL.DVIS.LOSS.BINARY_MARGIN", str(res["config"]["binary_margin"]),
        "MODEL.DVIS.LOSS.PI_WINDOW", str(window),
        "MODEL.DVIS.LOSS.PI_CENTER", str(center),
        "MODEL.DVIS.LOSS.PI_DILATION", str(dilation),
        "MODEL.DVIS.LOSS.PI_WEIGHT", str(fixture["research_defaults"]["pi_alpha"]),
    ])  # fmt: skip
    z = fixture["z"].clone().requires_grad_(True)
    losses = model.variational_losses(z, targets(fixture))
    for term, key in fixture["terms"].items():
        value = losses[key] * model.loss_weights[key]
        assert_parity(f"dvis {setting} {key}", value, res["losses"][term])
        (grad,) = torch.autograd.grad(value, z, retain_graph=True)
        assert_parity(f"dvis {setting} grad {key}", grad, res["grads"][term])


def test_default_weights_equal_research_defaults(fixture, repo_root):
    """The package's default loss weights, margin m2, different-pair weight and Huber theta
    are the research code's defaults (its binary margin 1 is not: the paper's m1 = 2 is); the
    shapes config raises only the pair term's weight (0.2 -> 1.0, projects/DVIS/NOTES.md)."""
    from instseg_d2.plugins import get_full_cfg

    d = fixture["research_defaults"]
    cfg = get_full_cfg()
    loss = cfg.MODEL.DVIS.LOSS
    assert (loss.BINARY_WEIGHT, loss.PI_WEIGHT, loss.MS_WEIGHT, loss.QUANT_WEIGHT) == (
        d["binary_alpha"], d["pi_alpha"], d["regul_alpha"], d["quanty_alpha"]
    )  # fmt: skip
    assert (loss.PI_MARGIN, loss.PI_DIFF_WEIGHT, loss.HUBER_THETA) == (
        d["pi_margin"], d["pi_pos_wght"], d["huber_theta"]
    )  # fmt: skip
    assert (d["binary_margin"], loss.BINARY_MARGIN) == (1.0, 2.0)
    _, shapes = dvis_model(repo_root)
    changed = {
        k for k, v in shapes.MODEL.DVIS.LOSS.items() if k.endswith("WEIGHT") and v != loss[k]
    }
    assert changed == {"PI_WEIGHT"} and shapes.MODEL.DVIS.LOSS.PI_WEIGHT == 1.0


def test_defaults_differ_from_research(fixture, repo_root):
    """With the defaults (paper: foreground pairs, mean over all pixels) the PI and MS terms
    are not the research code's (binary and quantization are the same functions). On these
    noisy maps f changes at almost every pixel, so the MS means differ little (0.94x); the
    documented sizes (PI 2-3x, MS up to ~8x on maps flat but for their edges) are derived by
    hand in the two tests below."""
    res = fixture["settings"]["B"]
    model, _ = dvis_model(repo_root, ["MODEL.DVIS.LOSS.BINARY_MARGIN", "2.0"])
    losses = model.variational_losses(fixture["z"], targets(fixture))
    w = model.loss_weights
    ratio_pi = float(losses["loss_pi"] * w["loss_pi"] / res["losses"]["pi"])
    ratio_ms = float(losses["loss_ms"] * w["loss_ms"] / res["losses"]["regul"])
    print(f"dvis defaults / research: PI {ratio_pi:.3f}, MS {ratio_ms:.3f}")
    assert ratio_pi > 1.1 and ratio_ms < 0.97
    assert_parity("dvis default binary", losses["loss_binary"] * w["loss_binary"],
                  res["losses"]["binary"])  # fmt: skip


def test_pi_pairs_hand_derived():
    """One row f = [2.0, 2.05, 0.5], ids [1, 1, 0], 3 x 3 window (all offsets), instance
    centres. Foreground pairs: only (p0, p1), same instance: L_h(0.05) = 0.05^2 / 0.2 = 0.0125.
    The research code's pairs: 4 offsets (0, 1), (1, -1), (1, 0), (1, 1) per centre, rows
    past the border replaced by row 0: p0 pairs with p1, p0, p0, p1 and p1 with p2
    (background), p0, p1, p2: 3 x L_h(0.05) + 3 x 0 (same pixel) + 2 x 3 L_h(ReLU(1 - 1.55)) = 0,
    mean over 8: 3 x 0.0125 / 8; the default is 8/3 times the research code's."""
    from dvis_d2.losses import permutation_invariant_loss, reference_offsets, stratified_offsets

    f = torch.tensor([[[2.0, 2.05, 0.5]]])
    ids = torch.tensor([[[1, 1, 0]]])
    valid = torch.ones_like(ids, dtype=torch.bool)
    kw = dict(margin=1.0, theta=0.1, diff_weight=3.0)
    fg = permutation_invariant_loss(f, ids, valid, offsets=stratified_offsets(3, 1, 1), **kw)
    ref = permutation_invariant_loss(
        f, ids, valid, offsets=reference_offsets(3, 1, 1), pairs="reference", **kw
    )
    assert reference_offsets(3, 1, 1).tolist() == [[0, 1], [1, -1], [1, 0], [1, 1]]
    assert fg.item() == pytest.approx(0.0125, rel=1e-5)
    assert ref.item() == pytest.approx(3 * 0.0125 / 8, rel=1e-5)


def test_ms_normalization_hand_derived():
    """A 6 x 6 map, 0 but for a 2 x 2 block of 1 at rows / columns 2-3. Forward differences:
    6 pixels have one unit step (log 2) and pixel (3, 3) two (log 3); the other 18 of the 25
    pixels with both forward neighbours are flat. "all_pixels": (6 log 2 + log 3) / 25;
    "nonzero": (6 log 2 + log 3) / 7, 25/7 times larger."""
    from dvis_d2.losses import mumford_shah_loss

    f = torch.zeros(1, 6, 6)
    f[0, 2:4, 2:4] = 1.0
    valid = torch.ones(1, 6, 6, dtype=torch.bool)
    total = 6 * math.log(2) + math.log(3)
    assert mumford_shah_loss(f, valid).item() == pytest.approx(total / 25, rel=1e-6)
    assert mumford_shah_loss(f, valid, "nonzero").item() == pytest.approx(total / 7, rel=1e-6)


@pytest.mark.parametrize(
    "key,value,match",
    [("PI_PAIRS", "all", "PI_PAIRS"), ("MS_NORMALIZATION", "mean", "MS_NORMALIZATION")],
)
def test_bad_switch_values_name_the_key(repo_root, key, value, match):
    with pytest.raises(ValueError, match=match):
        dvis_model(repo_root, [f"MODEL.DVIS.LOSS.{key}", value])
    if key == "PI_PAIRS":
        with pytest.raises(ValueError, match="PI_SAMPLING"):
            dvis_model(repo_root, ["MODEL.DVIS.LOSS.PI_PAIRS", "reference",
                                   "MODEL.DVIS.LOSS.PI_SAMPLING", "random"])  # fmt: skip
