"""The shapes configs (``configs/<Method>/shapes_*.yaml``), for tests parametrised over them."""

import glob
import os

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
# "<Method>/shapes_<name>.yaml", relative to CONFIGS
SHAPES_CONFIGS = sorted(
    os.path.relpath(p, CONFIGS) for p in glob.glob(os.path.join(CONFIGS, "*", "shapes_*.yaml"))
)

# Mask Transfiner's three quadtree levels of the COCO configs (the shapes config refines two)
TRANSFINER_THREE_LEVELS = [
    "MODEL.TRANSFINER.QUADTREE_DEPTH", "3", "MODEL.TRANSFINER.NODE_LEVEL_OFFSETS", "[1, 2, 3]",
    "MODEL.TRANSFINER.TRAIN_INCOHERENT_THRESH", "[0.125, 0.5, 0.5]",
]  # fmt: skip
