#!/usr/bin/env python
"""Convert an AdelaiDet SOLOv2 checkpoint (e.g. SOLOv2_R50_3x.pth) to solo_d2's names.

    python tools/solo_convert_adelaidet.py SOLOv2_R50_3x.pth output/solov2_r50_3x_d2.pth
    python train_net.py --config-file configs/SOLO/SOLOv2_R50_3x.yaml --eval-only \
        MODEL.WEIGHTS output/solov2_r50_3x_d2.pth

The key map is in solo_d2/convert.py. A checkpoint of another model is refused with a message
naming the keys that do not fit.
"""

import argparse
import sys

import torch

from solo_d2.convert import NotAdelaiDetSOLOv2Error, load_adelaidet_solov2


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("input", help="AdelaiDet SOLOv2 .pth")
    p.add_argument("output", help="converted detectron2 checkpoint (.pth)")
    args = p.parse_args(argv)
    try:
        model = load_adelaidet_solov2(args.input)
    except NotAdelaiDetSOLOv2Error as e:
        sys.exit(f"{args.input}: {e}")
    torch.save(
        {"model": model, "__author__": "AdelaiDet SOLOv2, converted by solo_d2"}, args.output
    )
    print(f"wrote {len(model)} tensors to {args.output}")


if __name__ == "__main__":
    main()
