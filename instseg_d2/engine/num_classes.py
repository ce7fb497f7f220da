"""The class count is set once, from the training set's metadata, for every head."""

import logging
from typing import List, Optional, Sequence, Tuple

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog

logger = logging.getLogger(__name__)


class ClassCountError(ValueError):
    """Dataset, config and checkpoint disagree about the classes; the message says which."""


def dataset_classes(name: str) -> List[str]:
    """thing_classes of a registered dataset (loading it if its metadata does not say)."""
    if name not in DatasetCatalog.list():
        raise KeyError(
            f"Dataset {name!r} is not registered. Registered: shapes_train, shapes_val, the "
            "detectron2 builtins (coco_2017_train, ...), and any --dataset NAME=json:image_dir"
        )
    meta = MetadataCatalog.get(name)
    if not hasattr(meta, "thing_classes"):
        DatasetCatalog.get(name)  # loaders such as load_coco_json set the metadata
    if not hasattr(meta, "thing_classes"):
        raise ClassCountError(f"Dataset {name!r} has no 'thing_classes' in its metadata")
    return list(meta.thing_classes)


def sync_num_classes(
    cfg: CfgNode,
    defaults: CfgNode,
    keys: Sequence[str],
    classes: Optional[Sequence[str]] = None,
    source: str = "the given classes",
) -> int:
    """Set every class-count key in ``keys`` to the number of classes.

    The classes are ``classes`` when given (e.g. those a checkpoint records; ``source`` names
    them in messages, e.g. "checkpoint 'model.pth'"), and then DATASETS need not exist.
    Otherwise they come from ``DATASETS.TRAIN[0]`` (``DATASETS.TEST[0]`` if there is no training
    set), and every other train/test dataset must have the same classes. A key that the config
    file or command line set explicitly (i.e. it differs from the default) to another count
    is an error that names the key, the value and where the classes came from. Returns the
    class count.
    """
    if classes is not None:
        classes = list(classes)
        if not classes:
            raise ClassCountError(f"{source} names no class")
    else:
        classes, source = _dataset_classes(cfg)
    n = len(classes)
    for key in keys:
        node, leaf = _lookup(cfg, key)
        if node is None:
            continue
        dnode, _ = _lookup(defaults, key)
        value, default = node[leaf], dnode[leaf] if dnode is not None else node[leaf]
        if value != default and value != n:
            raise ClassCountError(
                f"Config sets {key}={value}, but {source} has {n} classes "
                f"({', '.join(classes[:10])}{'...' if n > 10 else ''}). Remove the key (the "
                f"class count is taken from {source}) or use a dataset with those classes."
            )
        node[leaf] = n
    return n


def _dataset_classes(cfg: CfgNode) -> Tuple[List[str], str]:
    """The classes of the config's datasets (all must agree) and ``"dataset 'NAME'"``."""
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if not names:
        raise ClassCountError("Neither DATASETS.TRAIN nor DATASETS.TEST names a dataset")
    ref = names[0]
    classes = dataset_classes(ref)
    for other in names[1:]:
        oc = dataset_classes(other)
        if oc != classes:
            raise ClassCountError(
                f"Datasets {ref!r} and {other!r} have different classes "
                f"({len(classes)}: {classes[:8]}... vs {len(oc)}: {oc[:8]}...)"
            )
    return classes, f"dataset {ref!r}"


def _lookup(cfg: CfgNode, key: str):
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
        if p not in node:
            return None, leaf
        node = node[p]
    return (node, leaf) if leaf in node else (None, leaf)
