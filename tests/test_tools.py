"""The diagnostic tools' own logic."""

import pytest
import torch


def test_transfer_backbone(tmp_path, load_tool):
    tool = load_tool("transfer_backbone")
    src = {
        "backbone.bottom_up.stem.conv1.weight": torch.ones(2),
        "backbone.bottom_up.res5.0.conv1.norm.running_mean": torch.zeros(3),
        "backbone.fpn_lateral2.weight": torch.ones(1),
        "roi_heads.box_predictor.cls_score.weight": torch.ones(1),
    }
    torch.save({"model": src, "iteration": 9}, tmp_path / "src.pth")
    out = tool.main([str(tmp_path / "src.pth"), str(tmp_path / "out.pth")])
    assert set(out) == {"backbone.stem.conv1.weight", "backbone.res5.0.conv1.norm.running_mean"}
    saved = torch.load(tmp_path / "out.pth", weights_only=False)["model"]
    assert torch.equal(saved["backbone.stem.conv1.weight"], torch.ones(2))
    # a plain-ResNet source, written for an FPN model
    torch.save({"model": out}, tmp_path / "plain.pth")
    out2 = tool.main(
        [str(tmp_path / "plain.pth"), str(tmp_path / "o2.pth"), "--target-prefix",
         "backbone.bottom_up."]
    )  # fmt: skip
    assert set(out2) == {k for k in src if k.startswith("backbone.bottom_up.")}
    # no ResNet in it / not a checkpoint: the file is named
    torch.save({"model": {"head.weight": torch.ones(1)}}, tmp_path / "head.pth")
    with pytest.raises(SystemExit, match="head.pth: no ResNet"):
        tool.main([str(tmp_path / "head.pth"), str(tmp_path / "o3.pth")])
    (tmp_path / "junk.pth").write_text("junk")
    with pytest.raises(SystemExit, match="junk.pth: not a readable checkpoint"):
        tool.main([str(tmp_path / "junk.pth"), str(tmp_path / "o4.pth")])


def test_ridge_probe(load_tool):
    ridge_top1 = load_tool("sparseinst_match_stats").ridge_top1
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.randn(60, 4, generator=gen) * 0.1
    x[torch.arange(60), y] += 1.0  # class c raises feature c
    assert ridge_top1(x[:45], y[:45], x[45:], y[45:], num_classes=3) == 1.0
    noise = torch.randn(60, 4, generator=gen)  # no class information
    assert ridge_top1(noise[:45], y[:45], noise[45:], y[45:], num_classes=3) < 0.7
