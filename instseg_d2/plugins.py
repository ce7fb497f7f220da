"""Discovery of the method packages, and the one function that builds a complete config.

Every method package that is installed is imported (which registers its modules in
detectron2's registries) and its ``add_<method>_config`` is applied, so that one
``train_net.py`` runs every method. A package that is present but fails to import is an error,
not silently skipped.
"""

import importlib
import importlib.util
import logging
from types import ModuleType
from typing import Dict, List, Tuple

from detectron2.config import CfgNode, get_cfg

from .config import add_instseg_config

logger = logging.getLogger(__name__)

# (package, name of its add_<method>_config function), in a fixed order.
METHOD_PACKAGES: Tuple[Tuple[str, str], ...] = (
    ("instseg_d2.modeling", "add_modeling_config"),
    ("condinst_d2", "add_condinst_config"),
    ("blendmask_d2", "add_blendmask_config"),
    ("solo_d2", "add_solo_config"),
    ("sparseinst_d2", "add_sparseinst_config"),
    ("transfiner_d2", "add_transfiner_config"),
    ("dvis_d2", "add_dvis_config"),
    ("masklab_d2", "add_masklab_config"),
    ("semiconv_d2", "add_semiconv_config"),
)

# Class-count keys of detectron2's own heads. Method packages list theirs in a module-level
# ``NUM_CLASSES_KEYS`` tuple; every one of them is set from the training set's metadata.
D2_NUM_CLASSES_KEYS = ("MODEL.ROI_HEADS.NUM_CLASSES", "MODEL.RETINANET.NUM_CLASSES")

_loaded: Dict[str, ModuleType] = {}


def load_method_packages() -> List[ModuleType]:
    """Import every installed method package (once); return them in METHOD_PACKAGES order."""
    for pkg, _ in METHOD_PACKAGES:
        if pkg not in _loaded and importlib.util.find_spec(pkg.split(".")[0]) is not None:
            _loaded[pkg] = importlib.import_module(pkg)
    return [_loaded[pkg] for pkg, _ in METHOD_PACKAGES if pkg in _loaded]


def method_package_names() -> List[str]:
    load_method_packages()
    return list(_loaded)


def add_all_configs(cfg: CfgNode) -> None:
    """Add the platform's keys and every installed method's keys to ``cfg`` (in place).

    Every ``add_*_config`` adds keys to the cfg it is given and returns None, like detectron2's;
    one that returns something (a copy it may have changed instead) is an error naming it."""
    add_instseg_config(cfg)
    for pkg, fn_name in METHOD_PACKAGES:
        mod = _loaded.get(pkg)
        if mod is None:
            continue
        fn = getattr(mod, fn_name, None)
        if fn is None:
            raise AttributeError(f"Method package {pkg!r} does not define {fn_name}(cfg)")
        if fn(cfg) is not None:
            raise TypeError(
                f"{pkg}.{fn_name}(cfg) returned a value: it must add its keys to the cfg it is "
                "given and return None"
            )


def num_classes_keys() -> List[str]:
    keys = list(D2_NUM_CLASSES_KEYS)
    for mod in load_method_packages():
        keys += [k for k in getattr(mod, "NUM_CLASSES_KEYS", ()) if k not in keys]
    return keys


def get_full_cfg() -> CfgNode:
    """detectron2's default config plus the keys of the platform and of every method."""
    load_method_packages()
    cfg = get_cfg()
    add_all_configs(cfg)
    return cfg
