"""Checkpoints: metadata, fine-tuning on other classes, refusing the wrong model."""

import os

import pytest
import torch
from torch import nn

from instseg_d2.engine import CheckpointMismatchError, InstSegCheckpointer
from instseg_d2.engine.transfer_backbone import main as transfer_backbone


class Net(nn.Module):
    def __init__(self, num_classes=5):
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 3)
        self.cls = nn.Linear(4, num_classes)


class Other(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(2, 2)


META = {"meta_architecture": "Net", "thing_classes": ["a", "b", "c", "d", "e"]}


def _save(tmp_path, model, name="model_0000009", meta=META):
    ck = InstSegCheckpointer(model, str(tmp_path), meta=meta)
    ck.save(name, iteration=9)
    return os.path.join(str(tmp_path), f"{name}.pth")


def test_meta_recorded_and_exact_load(tmp_path):
    src = Net()
    path = _save(tmp_path, src)
    assert torch.load(path, weights_only=False)["instseg_meta"] == META
    dst = Net()
    InstSegCheckpointer(dst, meta=META, strict=True).load(path)
    assert torch.equal(dst.cls.weight, src.cls.weight)


def test_other_classes_reinitialise_heads_when_training(tmp_path, caplog):
    src = Net(5)
    path = _save(tmp_path, src)
    dst = Net(3)
    fresh = dst.cls.weight.detach().clone()
    meta3 = dict(META, thing_classes=["x", "y", "z"])
    with caplog.at_level("WARNING"):
        InstSegCheckpointer(dst, meta=meta3).load(path)
    assert torch.equal(dst.backbone.weight, src.backbone.weight)
    assert torch.equal(dst.cls.weight, fresh)  # kept its initialisation
    assert "cls.weight: checkpoint (5, 4) -> model (3, 4)" in caplog.text
    assert "thing_classes" in caplog.text
    with pytest.raises(CheckpointMismatchError, match="thing_classes"):
        InstSegCheckpointer(Net(3), meta=meta3, strict=True).load(path)
    with pytest.raises(CheckpointMismatchError, match="another shape"):
        InstSegCheckpointer(Net(3), meta={}, strict=True).load(path)


def test_wrong_model_refused(tmp_path):
    path = _save(tmp_path, Other(), meta={"meta_architecture": "Other"})
    with pytest.raises(CheckpointMismatchError, match="shares no parameter"):
        InstSegCheckpointer(Net(), meta=META).load(path)
    with pytest.raises(CheckpointMismatchError, match="meta_architecture='Other'"):
        InstSegCheckpointer(Net(), meta=META, strict=True).load(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        InstSegCheckpointer(Net()).load(str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="Cannot read checkpoint .*bad.pth"):
        InstSegCheckpointer(Net()).load(str(bad))


def test_best_checkpoint_does_not_move_resume_tag(tmp_path):
    ck = InstSegCheckpointer(Net(), str(tmp_path), meta=META)
    ck.save("model_0000009")
    ck.save("model_best")
    assert os.path.basename(ck.get_checkpoint_file()) == "model_0000009.pth"
    assert os.path.isfile(tmp_path / "model_best.pth")


def test_transfer_backbone_writes_the_resnet_under_a_prefix(tmp_path):
    src = {
        "backbone.bottom_up.stem.conv1.weight": torch.ones(2),
        "backbone.bottom_up.res5.0.conv1.norm.running_mean": torch.zeros(3),
        "backbone.fpn_lateral2.weight": torch.ones(1),
        "roi_heads.box_predictor.cls_score.weight": torch.ones(1),
    }
    torch.save({"model": src, "iteration": 9}, tmp_path / "src.pth")
    out = transfer_backbone([str(tmp_path / "src.pth"), str(tmp_path / "out.pth")])
    assert set(out) == {"backbone.stem.conv1.weight", "backbone.res5.0.conv1.norm.running_mean"}
    saved = torch.load(tmp_path / "out.pth", weights_only=False)["model"]
    assert torch.equal(saved["backbone.stem.conv1.weight"], torch.ones(2))
    # a plain-ResNet source, written for an FPN model
    torch.save({"model": out}, tmp_path / "plain.pth")
    out2 = transfer_backbone(
        [str(tmp_path / "plain.pth"), str(tmp_path / "o2.pth"), "--target-prefix",
         "backbone.bottom_up."]
    )  # fmt: skip
    assert set(out2) == {k for k in src if k.startswith("backbone.bottom_up.")}
    # no ResNet in it / not a checkpoint: the file is named
    torch.save({"model": {"head.weight": torch.ones(1)}}, tmp_path / "head.pth")
    with pytest.raises(SystemExit, match="head.pth: no ResNet"):
        transfer_backbone([str(tmp_path / "head.pth"), str(tmp_path / "o3.pth")])
    (tmp_path / "junk.pth").write_text("junk")
    with pytest.raises(SystemExit, match="junk.pth: not a readable checkpoint"):
        transfer_backbone([str(tmp_path / "junk.pth"), str(tmp_path / "o4.pth")])
