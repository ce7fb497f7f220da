#!/usr/bin/env python
"""Export a trained model, post-processing included, and check the export against the model.

    python tools/export.py --config-file configs/SOLO/shapes_SOLOv2_R_18.yaml \
        --output solov2.ts [--format torchscript|onnx] [--sample-image img.png ...] \
        [--dataset NAME=JSON:IMAGE_DIR] --opts MODEL.WEIGHTS output/solov2/model_final.pth

Every method exports. The program takes one (3, H, W) uint8 image of any size in INPUT.FORMAT,
already resized to the test size (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST), and returns
pred_boxes (R, 4), scores (R,), pred_classes (R,) and, with masks, pred_masks (R, H, W) bool
(see instseg_d2/export.py). TorchScript files also hold a json record (extra file
"instseg_export.json": outputs, classes, input format and sizes), read by
``instseg_d2.export.load_torchscript``.

The model is traced on the first sample image (it must give a detection), then the export is
run on every sample image and compared with the eager model; the tool exits non-zero if any
output differs. Sample images: --sample-image, else the first --num-images images of the
config's DATASETS.TEST[0]. ONNX output is checked with onnxruntime when it is installed.
"""

import sys

from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger

from instseg_d2 import export
from instseg_d2.demo import InputTransform
from instseg_d2.engine import INPUT_ERRORS, build_inference_model, inference_argument_parser


def get_parser():
    p = inference_argument_parser(__doc__)
    p.add_argument("--output", required=True, help="file to write (e.g. model.ts, model.onnx)")
    p.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    p.add_argument("--sample-image", action="append", default=[], help="repeatable")
    p.add_argument("--num-images", type=int, default=3, help="from DATASETS.TEST[0]")
    return p


def sample_images(cfg, paths, num_images: int):
    """The model inputs of the sample images (resized, INPUT.FORMAT)."""
    if not paths:
        if not cfg.DATASETS.TEST or cfg.DATASETS.TEST[0] not in DatasetCatalog.list():
            raise ValueError("give --sample-image (DATASETS.TEST[0] is not a registered dataset)")
        paths = [d["file_name"] for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])[:num_images]]
    transform = InputTransform(cfg)
    return [transform(read_image(p, format="BGR")) for p in paths]


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    opts = ["MODEL.DEVICE", "cpu"] + list(args.opts)
    cfg, model, classes = build_inference_model(args.config_file, opts, args.dataset)
    images = sample_images(cfg, args.sample_image, args.num_images)
    if args.format == "torchscript":
        info = {
            "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
            "thing_classes": classes,
            "input_format": cfg.INPUT.FORMAT,
            "min_size_test": cfg.INPUT.MIN_SIZE_TEST,
            "max_size_test": cfg.INPUT.MAX_SIZE_TEST,
        }
        fields = export.export_torchscript(model, images[0], args.output, info)
        run = export.load_torchscript(args.output)[0]
    else:
        fields = export.export_onnx(model, images[0], args.output)
        run = export.onnx_runner(args.output)
        if run is None:
            print(f"saved {args.output}; onnxruntime is not installed: not checked")
            return 0
    report = export.check_exported(model, run, fields, images)
    for r in report:
        print(" ".join(f"{k}={v}" for k, v in r.items()))
    ok = all(r[f] for r in report for f in fields)
    print(f"saved {args.output} ({', '.join(fields)}); equal to the model on "
          f"{len(report)} images: {ok}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    setup_logger(name="instseg_d2")  # (not in main(): the tests call it in their process)
    try:
        sys.exit(main())
    except INPUT_ERRORS + (export.ExportError,) as e:
        sys.exit(f"error: {e}")
