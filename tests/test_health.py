"""Training health: a stalled loss term and an evaluation without detections are reported at
the end of the run, AP is 0 (not nan), and TEST.STRICT_HEALTH makes train_net.py exit with 3."""

import math
import os

import pytest
import torch
from detectron2.structures import Instances

from instseg_d2.engine.health import (
    UNHEALTHY_EXIT_CODE,
    DetectionCounter,
    stalled_losses,
    zero_ap_without_detections,
)
from instseg_d2.testing import TINY_OPTS

FCOS = "configs/FCOS/shapes_FCOS_R_18.yaml"


def _history(values):
    return [(v, i) for i, v in enumerate(values)]


def test_stalled_losses_by_hand():
    stuck = [0.770, 0.784] * 30  # batch-to-batch noise around a constant: medians 0.777
    learning = [0.78 - 0.004 * i for i in range(60)]
    histories = {
        "loss_fcos_loc": _history(stuck),
        "loss_fcos_cls": _history(learning),
        "loss_zero": _history([0.0] * 60),
        "lr": _history([0.01] * 60),  # not a loss
        "loss_short": _history(stuck[:44]),  # fewer than 40 + 10 iterations: not checked
    }
    out = stalled_losses(histories, stall_iters=40, tolerance=0.02)
    assert set(out) == {"loss_fcos_loc", "loss_zero"}
    # initial median over the first min(20, 40 // 4) = 10 values, last over the last 40
    assert out["loss_fcos_loc"] == pytest.approx((0.777, 0.777))
    assert stalled_losses(histories, stall_iters=0, tolerance=0.02) == {}
    # 3 % above the initial level is "moved" with a 2 % tolerance, not with 5 %
    up = {"loss_x": _history([1.0] * 10 + [1.03] * 40)}
    assert stalled_losses(up, 40, 0.02) == {} and set(stalled_losses(up, 40, 0.05)) == {"loss_x"}


def test_zero_ap_without_detections_and_counter(caplog):
    results = {"bbox": {"AP": math.nan, "AP50": math.nan}, "segm": {"AP": math.nan}}
    problems = zero_ap_without_detections(results, "val")
    assert results == {"bbox": {"AP": 0.0, "AP50": 0.0}, "segm": {"AP": 0.0}}
    assert "'val' found no detection at all" in problems[0] and "AP is reported as 0" in caplog.text

    class Sink:
        def process(self, inputs, outputs):
            self.seen = len(outputs)

        def evaluate(self):
            return {"bbox": {}}

        def reset(self):
            pass

    counter = DetectionCounter(Sink())
    counter.reset()
    two, none = Instances((4, 4)), Instances((4, 4))
    two.scores, none.scores = torch.ones(2), torch.ones(0)
    counter.process([{}, {}], [{"instances": two}, {"instances": none}])
    assert counter.evaluate() == {"bbox": {}} and counter.num_detections == 2


def _fcos_args(repo_root, out, *opts):
    import train_net

    # every regression output far below 0: relu gives zero-width boxes and no gradient, as in a
    # collapsed run; every location a candidate (threshold 0), so detections exist until
    # post-processing drops the empty boxes
    return train_net.default_argument_parser().parse_args(
        ["--config-file", os.path.join(repo_root, FCOS)] + list(TINY_OPTS)
        + ["OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "12", "MODEL.FCOS.BBOX_PRED_BIAS_INIT",
           "-50.0", "MODEL.FCOS.INFERENCE_TH_TEST", "0.0", "TEST.STALL_ITERS", "8",
           "TEST.STALL_TOLERANCE", "0.25"] + list(opts)
    )  # fmt: skip


def test_collapsed_box_branch_reported(
    tiny_shapes, tmp_path, repo_root, capsys, caplog, monkeypatch
):
    import train_net
    from instseg_d2.modeling.fcos import fcos

    monkeypatch.setattr(fcos, "COLLAPSE_WARN_ITERS", 5)
    results = train_net.main(_fcos_args(repo_root, tmp_path / "warn"))
    # FCOS itself warns during training, once
    assert caplog.text.count("for 5 iterations every positive location has predicted a box") == 1
    assert results["bbox"]["AP"] == 0.0  # not nan
    out = capsys.readouterr().out
    assert "UNHEALTHY RUN" in out
    assert "loss_fcos_loc has not moved for the last 8 iterations" in out
    assert "'shapes_tiny_val' found no detection at all" in out
    assert "Set TEST.STRICT_HEALTH True" in out

    with pytest.raises(SystemExit) as e:
        train_net.main(_fcos_args(repo_root, tmp_path / "strict", "TEST.STRICT_HEALTH", "True"))
    assert e.value.code == UNHEALTHY_EXIT_CODE
    assert (tmp_path / "strict" / "model_final.pth").is_file()  # the checkpoint is kept
