#!/usr/bin/env python
"""Run a trained model on images or a video: overlays and COCO-style json.

    python tools/demo.py --config-file configs/SOLO/shapes_SOLOv2_R_18.yaml \
        --input img1.png 'photos/*.jpg' folder/ --output out/ \
        [--confidence-threshold 0.5] [--dataset NAME=JSON:IMAGE_DIR] \
        --opts MODEL.WEIGHTS output/solov2_shapes/model_final.pth [KEY VALUE ...]
    python tools/demo.py --config-file ... --video-input clip.mp4 --output out/ --opts ...

For each input image ``<name>.<ext>`` it writes ``out/<name>.<ext>``, the detections drawn by
detectron2's Visualizer, and ``out/<name>.json``, a list of COCO result records (``image_id`` =
the input's index, ``category_id`` = class index, ``category_name``, ``bbox`` as x, y, w, h,
``score``, ``segmentation`` as RLE for models with masks). A video ``<name>.<ext>`` gives
``out/<name>.mp4`` and ``out/<name>.json`` (``image_id`` = frame index).

The class names come from the checkpoint (every checkpoint saved by ``train_net.py`` records
them), so the config's datasets need not exist; for another checkpoint pass the dataset it was
trained on with ``--dataset NAME=annotations.json:image_dir``. Detections scoring below
``--confidence-threshold`` are left out.
"""

import sys

from detectron2.utils.logger import setup_logger

from instseg_d2.demo import Demo, expand_inputs
from instseg_d2.engine import INPUT_ERRORS, build_inference_model, inference_argument_parser


def get_parser():
    p = inference_argument_parser(__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", help="images, folders of images or glob patterns")
    src.add_argument("--video-input", help="a video file")
    p.add_argument("--output", required=True, help="folder for the overlays and json files")
    p.add_argument("--confidence-threshold", type=float, default=0.5)
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    cfg, model, classes = build_inference_model(args.config_file, args.opts, args.dataset)
    demo = Demo(cfg, model, classes, args.confidence_threshold)
    if args.input:
        demo.process_images(expand_inputs(args.input), args.output)
    else:
        demo.process_video(args.video_input, args.output)
    return 0


if __name__ == "__main__":
    setup_logger(name="instseg_d2")  # (not in main(): the tests call it in their process)
    try:
        sys.exit(main())
    except INPUT_ERRORS as e:
        sys.exit(f"error: {e}")
