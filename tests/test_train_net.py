"""train_net.py end to end on the tiny shapes splits: train + eval, eval-only, DDP, resume."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from instseg_d2.testing import TINY_OPTS, TINY_SPECS, train_and_evaluate

MASK_RCNN = "configs/MaskRCNN/shapes_MaskRCNN_R_18.yaml"


def _dataset_args(tiny_shapes):
    from detectron2.data import MetadataCatalog

    args = []
    for name in tiny_shapes:
        meta = MetadataCatalog.get(name)
        args += ["--dataset", f"{name}={meta.json_file}:{meta.image_root}"]
    return args


def _train_net(repo_root, args, **kw):
    cmd = [sys.executable, os.path.join(repo_root, "train_net.py")] + args
    env = dict(os.environ, OMP_NUM_THREADS="1")
    kw.setdefault("stdout", subprocess.PIPE)
    return subprocess.Popen(cmd, cwd=repo_root, env=env, stderr=subprocess.STDOUT, text=True, **kw)


def test_train_then_eval_only_reproduces(tiny_shapes, tmp_path, repo_root):
    import train_net

    out = str(tmp_path / "run")
    results = train_and_evaluate(os.path.join(repo_root, MASK_RCNN), out)
    assert set(results) == {"bbox", "segm", "boundary"} and "AP" in results["segm"]
    ckpt = torch.load(os.path.join(out, "model_final.pth"), weights_only=False)
    assert ckpt["iteration"] == 2
    assert ckpt["instseg_meta"]["meta_architecture"] == "GeneralizedRCNN"
    assert len(ckpt["instseg_meta"]["thing_classes"]) == 5

    eval_out = str(tmp_path / "eval")
    args = train_net.default_argument_parser().parse_args(
        ["--config-file", os.path.join(repo_root, MASK_RCNN), "--eval-only"]
        + list(TINY_OPTS) + ["MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
                             "OUTPUT_DIR", eval_out]
    )  # fmt: skip
    again = train_net.main(args)
    assert json.dumps(again, sort_keys=True) == json.dumps(results, sort_keys=True)  # NaN-safe
    # the predictions themselves are identical, not only the summary numbers
    rel = "inference/shapes_tiny_val/coco_instances_results.json"
    with open(os.path.join(out, rel)) as a, open(os.path.join(eval_out, rel)) as b:
        assert json.load(a) == json.load(b)


def test_eval_only_refuses_checkpoint_of_other_classes(tiny_shapes, tmp_path, repo_root):
    import train_net
    from detectron2.modeling import build_model
    from instseg_d2.engine import CheckpointMismatchError, InstSegCheckpointer, build_config

    cfg = build_config(os.path.join(repo_root, MASK_RCNN), list(TINY_OPTS))
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 9
    InstSegCheckpointer(build_model(cfg), str(tmp_path)).save("nine")
    args = train_net.default_argument_parser().parse_args(
        ["--config-file", os.path.join(repo_root, MASK_RCNN), "--eval-only"] + list(TINY_OPTS)
        + ["MODEL.WEIGHTS", str(tmp_path / "nine.pth"), "OUTPUT_DIR", str(tmp_path / "o")]
    )  # fmt: skip
    with pytest.raises(CheckpointMismatchError, match="nine.pth.*another shape"):
        train_net.main(args)


def test_two_process_cpu_training(tiny_shapes, tmp_path, repo_root):
    out = tmp_path / "ddp"
    args = ["--config-file", MASK_RCNN, "--num-gpus", "2"] + _dataset_args(tiny_shapes)
    args += list(TINY_OPTS) + ["OUTPUT_DIR", str(out), "SOLVER.IMS_PER_BATCH", "4"]
    proc = _train_net(repo_root, args)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    assert "World size: 2" in log
    assert "segm:" in log  # evaluated (distributed inference) and summarised
    assert (out / "model_final.pth").is_file()


def _tagged_iteration(out) -> int:
    """Iteration of the checkpoint named by ``out/last_checkpoint`` (-1 if none yet)."""
    tag = out / "last_checkpoint"
    name = tag.read_text().strip() if tag.is_file() else ""
    match = re.fullmatch(r"model_(\d+)\.pth", name)
    return int(match.group(1)) if match else -1


def test_kill_and_resume(tiny_shapes, tmp_path, repo_root):
    out = tmp_path / "resume"
    base = ["--config-file", MASK_RCNN] + _dataset_args(tiny_shapes) + list(TINY_OPTS)
    base += ["OUTPUT_DIR", str(out), "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "0"]
    # the log goes to a file: nobody reads a pipe while the run goes on, and a full pipe blocks it
    log_file = open(tmp_path / "killed_run.log", "w")
    proc = _train_net(
        repo_root, base + ["SOLVER.MAX_ITER", "500"], start_new_session=True, stdout=log_file
    )
    deadline = time.time() + 300
    while _tagged_iteration(out) < 3:  # the tag is written after the checkpoint it names
        assert proc.poll() is None, (tmp_path / "killed_run.log").read_text()[-3000:]
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log_file.close()
    with open(out / "last_checkpoint") as f:
        last = f.read().strip()
    last_iter = torch.load(out / last, weights_only=False)["iteration"]
    assert last_iter >= 3

    proc = _train_net(repo_root, ["--resume"] + base + ["SOLVER.MAX_ITER", str(last_iter + 3)])
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    assert f"Starting training from iteration {last_iter + 1}" in log
    final = torch.load(out / "model_final.pth", weights_only=False)
    assert final["iteration"] == last_iter + 2


def test_foreign_coco_trains_and_evaluates(tmp_path, repo_root):
    from foreign_coco import make_foreign_coco
    from instseg_d2.data import register_coco_instances_checked

    json_file = make_foreign_coco(str(tmp_path / "data"))
    register_coco_instances_checked(
        "foreign_train", json_file, str(tmp_path / "data" / "images"), replace=True
    )
    results = train_and_evaluate(
        os.path.join(repo_root, MASK_RCNN),
        str(tmp_path / "out"),
        ["DATASETS.TRAIN", "('foreign_train',)", "DATASETS.TEST", "('foreign_train',)",
         "INPUT.MIN_SIZE_TRAIN", "(40,)", "INPUT.MIN_SIZE_TEST", "40"],
    )  # fmt: skip
    assert "segm" in results


def test_tiny_specs_are_small():
    assert sum(s.num_images for s in TINY_SPECS.values()) <= 32


def test_periodic_eval_keeps_best_and_amp_on_cpu(tiny_shapes, tmp_path, repo_root):
    out = tmp_path / "best"
    # every detection kept: after 2 iterations the scores may all be under the usual 0.05,
    # and an evaluation without detections has no AP to rank checkpoints by
    opts = ["TEST.EVAL_PERIOD", "2", "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2",
            "SOLVER.AMP.ENABLED", "True", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]  # fmt: skip
    results = train_and_evaluate(os.path.join(repo_root, MASK_RCNN), str(out), opts)
    assert "segm" in results
    assert (out / "model_best.pth").is_file()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    with open(out / "metrics.json") as f:
        evals = [json.loads(line) for line in f if "segm/AP" in line]
    assert len(evals) == 2  # at iteration 2 and at the end
    losses = [
        json.loads(line)["total_loss"]
        for line in open(out / "metrics.json")
        if "total_loss" in line
    ]
    assert all(map(lambda v: v == v and v < 1e3, losses))  # bfloat16 autocast: finite losses
