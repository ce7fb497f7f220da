"""Writes tests/fixtures/parity/dvis.pt: the terms of DVIS's variational loss as the research
code (jia2lin3yuan1/2020-instanceSeg) computes them on tiny label maps.

    python tools/parity/dvis.py --reference <clone of jia2lin3yuan1/2020-instanceSeg> \\
        --extra-path <folder with scikit-image>

Two 16 x 16 label maps with 3 and 2 instances and fixed predictions ``z`` (piecewise constant
plus noise, a background spike of 6.5 past the research code's clamp of pair differences at 5,
a negative value on an instance). The research code's own functions make the targets (its
dataset's ``construct_inst_sem_label``: instance channels and the binary term's pixel weights)
and the loss terms (its ``LossEvaluate``: binary, permutation-invariant with its dilated-conv
pairs, quantization, Mumford-Shah, weighted by its default ``getDefaultSetting`` alphas), and
their gradients with respect to ``z``, in two settings: A, the research defaults (binary margin
1, background pixels as pair centres), and B (margin 2 as the paper, instance centres only);
the pair kernel is 9 x 9 (dense centre 3, dilation 2) for these small maps. Recorded with the
research defaults that the project's config should share. The research code needs
scikit-image (``pip install --target <folder> --no-deps scikit-image lazy_loader`` and pass
that folder as ``--extra-path``); it builds its Mumford-Shah kernels with ``.cuda()``, which
is made a no-op on the reference side (CPU only).
"""

import torch

from harness import main

SIZE = 16
PI_KERNEL = (9, 3, 2)  # window (pi_ksize 9 x 9), dense centre (pi_kcen), dilation (pi_kdilate)
SETTINGS = {"A": {"binary_margin": 1.0, "pi_hasBG": 1}, "B": {"binary_margin": 2.0, "pi_hasBG": 0}}
TERMS = {"binary": "loss_binary", "pi": "loss_pi", "regul": "loss_ms", "quanty": "loss_quant"}


def make_inputs():
    """Instance masks (non-overlapping) and predictions z of two 16 x 16 label maps."""
    g = torch.Generator().manual_seed(2020)
    boxes = [
        [(2, 8, 3, 10, 1.6), (9, 15, 8, 15, 3.1), (11, 14, 1, 4, 4.4)],
        [(1, 7, 1, 7, 2.2), (8, 14, 5, 14, 3.7)],
    ]
    z = 0.3 * torch.randn(len(boxes), SIZE, SIZE, generator=g) - 0.1
    masks = []
    for i, objects in enumerate(boxes):
        m = torch.zeros(len(objects), SIZE, SIZE, dtype=torch.bool)
        for k, (y0, y1, x0, x1, value) in enumerate(objects):
            m[k, y0:y1, x0:x1] = True
            noise = 0.15 * torch.randn(y1 - y0, x1 - x0, generator=g)
            z[i, y0:y1, x0:x1] = value + noise
        masks.append(m)
    z[0, 0, 15] = 6.5  # background spike: |f(p1) - f(p2)| > 5 for background pairs
    z[1, 10, 6] = -0.5  # negative on an instance: the binary term's gradient still flows
    return z, masks


# ------------------------------------------------------------------------ project side
def generate(ref, args) -> dict:
    z, masks = make_inputs()
    out = ref("run", {"z": z, "masks": masks, "pi_kernel": PI_KERNEL, "settings": SETTINGS})
    for name, res in out["settings"].items():
        print(name, SETTINGS[name], {k: round(float(v), 6) for k, v in res["losses"].items()})
    return {
        "reference": {"repository": "jia2lin3yuan1/2020-instanceSeg", "commit": ref.commit},
        "z": z,
        "masks": masks,
        "pi_kernel": PI_KERNEL,
        "terms": TERMS,
        **out,
    }


# ---------------------------------------------------------------------- reference side
def _research_targets(masks):
    """(B, C + 1, H, W) targets as the research dataset gives them (instance channels, the
    background first, then the pixel weights), from its ``construct_inst_sem_label``."""
    import numpy as np
    from data.base_dataset import Detection

    channels = max(len(m) for m in masks) + 1
    out = []
    for m in masks:
        m = m.numpy().astype(np.float32)
        with_bg = np.concatenate([(m.sum(0) == 0)[None].astype(np.float32), m])
        boxes = np.zeros((len(with_bg), 5), dtype=np.float32)
        inst, _, weights, _ = Detection.construct_inst_sem_label(
            None, with_bg, boxes, mask_out_ch=channels
        )
        out.append(torch.from_numpy(np.concatenate([inst, weights])))
    return torch.stack(out)


def stage_run(payload, reference):
    import inspect

    from layers.modules.instance_loss import PermuInvLossDilatedConv, adjust_smooth_l1_loss
    from layers.modules.loss_main import LossEvaluate
    from train_settings import getDefaultSetting

    targets = _research_targets(payload["masks"])
    window, center, dilation = payload["pi_kernel"]
    defaults = getDefaultSetting()
    pi_signature = inspect.signature(PermuInvLossDilatedConv.__init__).parameters
    result = {
        "ids": targets[:, :-1].argmax(1),
        "weights": targets[:, -1],
        "research_defaults": {
            **{k: defaults[k] for k in ("binary_alpha", "pi_alpha", "regul_alpha",
                                        "quanty_alpha", "pi_margin", "binary_margin",
                                        "pi_hasBG", "pi_mode")},  # fmt: skip
            "pi_pos_wght": pi_signature["pos_wght"].default,
            "huber_theta": inspect.signature(adjust_smooth_l1_loss).parameters["theta"].default,
        },
        "settings": {},
    }
    cuda = torch.Tensor.cuda
    for name, setting in payload["settings"].items():
        config = dict(defaults, rfn_en=0, eval_en=0, pi_ksize=[window, window])
        config.update(pi_kcen=center, pi_kdilate=dilation, **setting)
        torch.Tensor.cuda = lambda self, *args, **kwargs: self  # CPU: its kernels call .cuda()
        try:
            losses = LossEvaluate(config)
        finally:
            torch.Tensor.cuda = cuda
        z = payload["z"][:, None].clone().requires_grad_(True)
        ids = torch.zeros(z.shape[0], targets.shape[1] - 1, dtype=torch.int)
        ret = losses.process_step_singleChannel(z, targets, target_ids=ids)
        result["settings"][name] = {
            "config": setting,
            "losses": {k: ret[k].detach().clone() for k in TERMS},
            "grads": {k: torch.autograd.grad(ret[k], z, retain_graph=True)[0][:, 0] for k in TERMS},
        }
    return result


if __name__ == "__main__":
    main(__file__, __doc__, "dvis.pt", generate, {"run": stage_run})
