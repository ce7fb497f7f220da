#!/usr/bin/env python
"""Export a SparseInst model with its post-processing (torch.export) and check it.

    python tools/sparseinst_export.py --config-file configs/SparseInst/shapes_R_18_GIAM.yaml \
        --weights output/sparseinst_shapes/model_final.pth --output sparseinst.pt2 \
        [--num-images 5] [KEY VALUE ...]

The exported program takes one (3, H, W) image of any size (already resized to the test size,
in INPUT.FORMAT) and returns scores, classes, masks and boxes
(:class:`sparseinst_d2.export.SparseInstPredictor`). The script compares it with the eager
model on the first ``--num-images`` images of ``DATASETS.TEST[0]`` and exits non-zero if any
output differs.
"""

import argparse
import sys

import torch
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from instseg_d2.engine import build_config, load_model
from sparseinst_d2.export import SparseInstPredictor, export_predictor


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", default="", help="checkpoint (default: MODEL.WEIGHTS)")
    p.add_argument("--output", default="sparseinst.pt2")
    p.add_argument("--num-images", type=int, default=5)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)

    cfg = build_config(args.config_file, ["MODEL.DEVICE", "cpu"] + args.opts)
    cfg.freeze()
    if cfg.MODEL.META_ARCHITECTURE != "SparseInst":
        sys.exit(f"{args.config_file}: MODEL.META_ARCHITECTURE is {cfg.MODEL.META_ARCHITECTURE!r}")
    model = load_model(cfg, args.weights or cfg.MODEL.WEIGHTS)
    predictor = SparseInstPredictor(model).eval()

    aug = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    images = []
    for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])[: args.num_images]:
        image = utils.read_image(d["file_name"], cfg.INPUT.FORMAT)
        image = aug.get_transform(image).apply_image(image)
        images.append(torch.as_tensor(image.transpose(2, 0, 1).copy()))
    program = export_predictor(predictor, images[0])
    torch.export.save(program, args.output)
    exported = torch.export.load(args.output).module()

    ok = True
    with torch.no_grad():
        for i, image in enumerate(images):
            scores, classes, masks, boxes = exported(image)
            eager = model([{"image": image}])[0]["instances"]  # at the input's size
            same = (
                torch.equal(classes, eager.pred_classes)
                and torch.equal(masks, eager.pred_masks)
                and torch.equal(boxes, eager.pred_boxes.tensor)
                and torch.allclose(scores, eager.scores, rtol=1e-5, atol=1e-7)
            )
            diff = (scores - eager.scores).abs().max().item() if len(scores) else 0.0
            print(
                f"image {i} {tuple(image.shape[1:])}: {len(scores)} detections, "
                f"max |score diff| {diff:.2e}, masks/classes/boxes equal: {same}"
            )
            ok &= same
    print(f"saved {args.output}; exported == eager on {len(images)} images: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
