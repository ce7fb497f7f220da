"""Discovery of the method packages, and the one function that builds a complete config.

Every method package registered under the ``instseg_d2.methods`` entry-point group (setup.py;
a third-party package registers itself the same way) is imported (which registers its modules in
detectron2's registries) and its ``add_<method>_config`` is applied, so that one
``train_net.py`` runs every method. A package that is present but fails to import is an error,
not silently skipped.
"""

import importlib
import logging
from importlib.metadata import entry_points
from types import ModuleType
from typing import Dict, List, Tuple

from detectron2.config import CfgNode, get_cfg

from .config import add_instseg_config

logger = logging.getLogger(__name__)

# Method packages register themselves under this entry-point group (setup.py):
# ``<name> = <package>:<its add_<method>_config function>``.
ENTRY_POINT_GROUP = "instseg_d2.methods"
# The platform's own models (FCOS, the shared ResNet/FPN pieces), always loaded first.
CORE_PACKAGES: Tuple[Tuple[str, str], ...] = (("instseg_d2.modeling", "add_modeling_config"),)

# Class-count keys of detectron2's own heads. Method packages list theirs in a module-level
# ``NUM_CLASSES_KEYS`` tuple; every one of them is set from the training set's metadata.
D2_NUM_CLASSES_KEYS = ("MODEL.ROI_HEADS.NUM_CLASSES", "MODEL.RETINANET.NUM_CLASSES")

_loaded: Dict[str, ModuleType] = {}


def method_packages() -> List[Tuple[str, str]]:
    """(package, name of its config function) of the core and of every installed method
    package, the methods in the order of their entry-point names.

    Raises:
        RuntimeError: no method package is registered (the project is not installed).
    """
    found = {}
    eps = entry_points()
    eps = (
        eps.select(group=ENTRY_POINT_GROUP)
        if hasattr(eps, "select")
        else eps.get(ENTRY_POINT_GROUP, ())
    )  # Python 3.9: a dict of groups
    for ep in eps:
        pkg, _, fn_name = ep.value.partition(":")
        found.setdefault(ep.name, (pkg.strip(), fn_name.strip()))
    if not found:
        raise RuntimeError(
            f"No method package is registered under the entry-point group {ENTRY_POINT_GROUP!r}: "
            "install the project (`pip install -e .` in its checkout) so that its method "
            "packages are found"
        )
    return list(CORE_PACKAGES) + [found[name] for name in sorted(found)]


def load_method_packages() -> List[ModuleType]:
    """Import the core and every installed method package (once), in :func:`method_packages`
    order; a package that fails to import is an error, not skipped."""
    packages = method_packages()
    for pkg, _ in packages:
        if pkg not in _loaded:
            _loaded[pkg] = importlib.import_module(pkg)
    return [_loaded[pkg] for pkg, _ in packages]


def method_package_names() -> List[str]:
    load_method_packages()
    return list(_loaded)


def add_all_configs(cfg: CfgNode) -> None:
    """Add the platform's keys and every installed method's keys to ``cfg`` (in place).

    Every ``add_*_config`` adds keys to the cfg it is given and returns None, like detectron2's;
    one that returns something (a copy it may have changed instead) is an error naming it."""
    add_instseg_config(cfg)
    for pkg, fn_name in method_packages():
        mod = _loaded.get(pkg) or importlib.import_module(pkg)
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
