#!/usr/bin/env python
"""Convert a checkpoint published by AdelaiDet (FCOS, CondInst or BlendMask) for MODEL.WEIGHTS.

    python tools/fcos_convert_adelaidet.py CondInst_MS_R_50_1x.pth condinst_r50_1x.pth \
        --meta-arch CondInst
    python train_net.py --config-file configs/CondInst/MS_R_50_1x.yaml --eval-only \
        MODEL.WEIGHTS condinst_r50_1x.pth

``--meta-arch`` is OneStageDetector (FCOS), CondInst or BlendMask; the checkpoint must hold that
model. Key map: instseg_d2/modeling/adelaidet.py.
"""

import argparse

import torch

from instseg_d2.modeling.adelaidet import KINDS, convert_adelaidet_state_dict


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("input", help="AdelaiDet .pth (a dict with 'model', or a bare state dict)")
    p.add_argument("output", help="converted checkpoint, for MODEL.WEIGHTS")
    p.add_argument("--meta-arch", required=True, choices=KINDS)
    args = p.parse_args(argv)
    ckpt = torch.load(args.input, map_location="cpu", weights_only=False)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise SystemExit(f"{args.input}: not a checkpoint (no state dict inside)")
    model = convert_adelaidet_state_dict(state, args.meta_arch)
    torch.save({"model": model, "__author__": "AdelaiDet, converted by instseg_d2"}, args.output)
    print(f"{args.output}: {len(model)} tensors for {args.meta_arch}")


if __name__ == "__main__":
    main()
