"""Config building: unknown keys, class count taken once from the dataset."""

import os

import pytest

from instseg_d2.engine import ClassCountError, ConfigKeyError, build_config
from instseg_d2.plugins import num_classes_keys

MASK_RCNN = "configs/MaskRCNN/shapes_MaskRCNN_R_18.yaml"


def test_unknown_key_in_file_names_file_and_key(tmp_path, repo_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{repo_root}/{MASK_RCNN}"\nMODEL:\n  ROI_HEADZ:\n    NUM_CLASSES: 3\n')
    with pytest.raises(ConfigKeyError) as e:
        build_config(str(bad))
    msg = str(e.value)
    assert str(bad) in msg and "MODEL.ROI_HEADZ" in msg and "does not exist" in msg


def test_unknown_key_on_command_line(repo_root):
    with pytest.raises(
        ConfigKeyError, match="command-line override: config key SOLVER.MAX_ITERS"
    ) as e:
        build_config(f"{repo_root}/{MASK_RCNN}", ["SOLVER.MAX_ITERS", "10"])
    assert "Did you mean SOLVER.MAX_ITER" in str(e.value)


def test_class_count_from_dataset(repo_root, tiny_shapes):
    cfg = build_config(f"{repo_root}/{MASK_RCNN}")
    assert cfg.DATASETS.TRAIN == ("shapes_cmp_train",)
    for key in num_classes_keys():
        node = cfg
        for part in key.split("."):
            node = node[part] if part in node else None
            if node is None:
                break
        if node is not None:
            assert node == 5, key  # every class-count key follows the dataset


def test_class_count_mismatch_fails_fast(repo_root):
    with pytest.raises(ClassCountError) as e:
        build_config(f"{repo_root}/{MASK_RCNN}", ["MODEL.ROI_HEADS.NUM_CLASSES", "7"])
    msg = str(e.value)
    assert "MODEL.ROI_HEADS.NUM_CLASSES=7" in msg and "'shapes_cmp_train' has 5 classes" in msg


def test_train_and_test_sets_must_share_classes(repo_root, tmp_path):
    from foreign_coco import make_foreign_coco
    from instseg_d2.data import register_coco_instances_checked

    register_coco_instances_checked(
        "foreign_cls", make_foreign_coco(str(tmp_path)), str(tmp_path / "images"), replace=True
    )
    with pytest.raises(
        ClassCountError, match="'shapes_cmp_train' and 'foreign_cls' have different"
    ):
        build_config(f"{repo_root}/{MASK_RCNN}", ["DATASETS.TEST", "('foreign_cls',)"])


def test_unknown_dataset(repo_root):
    with pytest.raises(KeyError, match="'nope' is not registered"):
        build_config(f"{repo_root}/{MASK_RCNN}", ["DATASETS.TEST", "('nope',)"])


def test_every_config_builds(repo_root):
    """Every yaml under configs/ merges into the full config (keys exist, values typed)."""
    import glob

    from detectron2.modeling import build_model

    files = sorted(glob.glob(f"{repo_root}/configs/**/*.yaml", recursive=True))
    assert files
    for f in files:
        if os.path.basename(f).startswith("Base-"):
            continue
        cfg = build_config(f, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
        if "shapes" in os.path.basename(f):
            build_model(cfg)  # shapes models are small: build them too
