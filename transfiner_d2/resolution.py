"""How fine a box-relative mask grid must be for a dataset: the ceiling of every quadtree level.

    python -m transfiner_d2.resolution \\
        --config-file configs/Transfiner/shapes_Transfiner_R_18.yaml \\
        [--num-images 200] [--sizes 28 56 112] [KEY VALUE ...]

Every ground-truth object of the first images of the config's test set (the test-time resize)
is cropped to its own box at S x S (RoIAlign of the binary mask, as Mask R-CNN's targets,
kept soft: the area share of every cell) and pasted back into the image the way predicted
masks are (detectron2's ``paste_masks_in_image``, threshold 0.5). The mask IoU and boundary IoU
(Cheng et al. 2021, the band of the boundary AP) of the pasted mask with the original are what a
perfect S x S predictor scores on that object: the ceiling of a mask grid of that size. Printed
per S, overall and by box size (the longer side in pixels). Where the 28 x 28 ceiling is already
close to 1, the finer quadtree levels (56, 112) have little left to recover.
"""

import argparse
from typing import Dict, List, Sequence

import numpy as np
import torch
from detectron2.layers import paste_masks_in_image
from detectron2.structures import BitMasks
from torchvision.ops import roi_align

from instseg_d2.data import annotated_test_batches
from instseg_d2.engine import build_config
from instseg_d2.engine.evaluation import mask_boundary
from instseg_d2.layers import mask_iou_matrix
from transfiner_d2.nodes import means_by_box_side


def roundtrip_ious(masks: torch.Tensor, size: int, dilation_ratio: float = 0.02):
    """Mask and boundary IoU of every mask with itself cropped to its box at size x size and
    pasted back.

    Args:
        masks: (N, H, W) bool masks of one image (none empty).

    Returns:
        (N,) mask IoUs, (N,) boundary IoUs, (N,) longer box sides in pixels.
    """
    boxes = BitMasks(masks).get_bounding_boxes()
    rois = torch.cat([torch.arange(len(boxes), dtype=torch.float32)[:, None], boxes.tensor], 1)
    crops = roi_align(masks[:, None].float(), rois, size, 1.0, 0, aligned=True)[:, 0]
    pasted = paste_masks_in_image(crops, boxes, masks.shape[-2:], threshold=0.5)

    def boundaries(m: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.stack([mask_boundary(x, dilation_ratio) for x in m.numpy()]))

    mask_iou = mask_iou_matrix(masks, pasted).diagonal()
    boundary_iou = mask_iou_matrix(boundaries(masks), boundaries(pasted)).diagonal()
    sides = (boxes.tensor[:, 2:] - boxes.tensor[:, :2]).max(1).values
    return mask_iou, boundary_iou, sides


def resolution_ceiling(masks: List[torch.Tensor], sizes: Sequence[int]) -> Dict[int, dict]:
    """Mean round-trip mask / boundary IoU per grid size, overall and per ``SIZE_BINS``.

    Args:
        masks: per image, (N_i, H_i, W_i) bool GT masks.

    Returns:
        {size: {"all" or "lo-hi": (objects, mean mask IoU, mean boundary IoU)}}.
    """
    out = {}
    for size in sizes:
        rows = [roundtrip_ious(m, size) for m in masks if len(m)]
        iou, biou, sides = (torch.cat(col) for col in zip(*rows))
        out[size] = means_by_box_side(sides, iou, biou)
    return out


def main(argv=None) -> Dict[int, dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--num-images", type=int, default=200)
    p.add_argument("--sizes", type=int, nargs="+", default=[28, 56, 112])
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    cfg = build_config(args.config_file, list(args.opts))
    cfg.freeze()
    name = cfg.DATASETS.TEST[0]
    batches = annotated_test_batches(cfg, name, args.num_images)
    masks = [x["instances"].gt_masks.tensor for batch in batches for x in batch]
    masks = [m[m.flatten(1).any(1)] for m in masks]
    out = resolution_ceiling(masks, args.sizes)
    print(f"{name}: a perfect S x S mask of every GT object, pasted back (mask IoU / boundary IoU)")
    for size, res in out.items():
        parts = [f"{k} px: {v[1]:.4f} / {v[2]:.4f} ({v[0]})" for k, v in res.items() if v[0]]
        print(f"S = {size}: " + ", ".join(parts))
    return out


if __name__ == "__main__":
    main()
