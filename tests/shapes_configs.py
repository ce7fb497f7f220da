"""The shapes configs (``configs/<Method>/shapes_*.yaml``), for tests parametrised over them."""

import glob
import os

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
# "<Method>/shapes_<name>.yaml", relative to CONFIGS
SHAPES_CONFIGS = sorted(
    os.path.relpath(p, CONFIGS) for p in glob.glob(os.path.join(CONFIGS, "*", "shapes_*.yaml"))
)
