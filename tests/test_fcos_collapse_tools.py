"""FCOS diagnostics: make-blobs (nuclei-like data) and collapse-probe (box-branch log)."""

import json

import pytest
from detectron2.config import CfgNode as CN
from detectron2.data import DatasetCatalog

from instseg_d2.data import register_coco_instances_checked
from instseg_d2.testing import TINY_OPTS

FCOS = "configs/FCOS/shapes_FCOS_R_18.yaml"


def test_make_blobs(tmp_path):
    from instseg_d2.modeling.fcos.diagnostics import blobs as tool

    json_file = tool.make_blobs(str(tmp_path), num_images=3, seed=0, size=96)
    register_coco_instances_checked("blobs_test", json_file, str(tmp_path / "images"), True)
    dicts = DatasetCatalog.get("blobs_test")
    assert len(dicts) == 3 and all(d["height"] == d["width"] == 96 for d in dicts)
    boxes = [a["bbox"] for d in dicts for a in d["annotations"]]
    assert len(boxes) >= 3 * 3
    assert all(4 <= max(w, h) <= 19 for _, _, w, h in boxes)  # semi-axes 3-9 px
    with open(json_file) as f:
        assert json.load(f) == json.load(open(tool.make_blobs(str(tmp_path / "again"), 3, 0, 96)))


def test_copy_known_keys():
    from instseg_d2.modeling.fcos.diagnostics import collapse_probe as tool

    src = CN({"A": 1, "B": CN({"C": 2, "D": 3}), "E": 4})
    dst = CN({"A": 0, "B": CN({"C": 0})})
    assert tool.copy_known_keys(src, dst) == ["B.D", "E"]
    assert dst == CN({"A": 1, "B": CN({"C": 2})})


@pytest.mark.parametrize("bias, dead", [(0.0, False), (-50.0, True)])
def test_probe_log(tiny_shapes, tmp_path, repo_root, bias, dead):
    from instseg_d2.modeling.fcos.diagnostics import collapse_probe as tool

    out = tmp_path / "probe"
    tool.main(["--config-file", f"{repo_root}/{FCOS}", "--iters", "2", "--output-dir", str(out)]
              + list(TINY_OPTS) + ["MODEL.FCOS.BBOX_PRED_BIAS_INIT", str(bias)])  # fmt: skip
    rows = [json.loads(line) for line in open(out / "ours.jsonl")]
    assert [r["it"] for r in rows] == [0, 1] and all(r["npos"] > 0 for r in rows)
    first = rows[0]
    assert set(first["tower_grad"]) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    assert first["tower_grad"]["loss_fcos_cls"] == 0.0  # the class branch has its own tower
    if dead:  # every output far below 0: no box has an area, GIoU passes no gradient
        assert all(v == 1.0 for v in first["dead_p3"].values())
        assert first["zero_area"] == 1.0 and first["grad_bbox_pred"] == 0.0
        assert first["tower_grad"]["loss_fcos_loc"] == 0.0
        assert set(first["push_down"].values()) == set(first["push_up"].values()) == {0.0}
    else:  # at initialisation about half of the outputs are <= 0, and the loss has a gradient
        assert all(0.05 < v < 0.95 for v in first["dead_p3"].values())
        assert first["grad_bbox_pred"] > 0 and first["tower_grad"]["loss_fcos_loc"] > 0
    assert (out / "init.pth").is_file() and (out / "batches.pth").is_file()
