#!/usr/bin/env python
"""The GPU check: every method on CUDA with AMP, in one short run (a few minutes on one GPU).

    python tools/gpu_check.py --output-dir gpu_check [--iters 50] [--latency-iters 20]
        [--configs configs/A/shapes_x.yaml ...] [--skip-latency] [--device cuda]

1. Every shapes config (default ``configs/*/shapes_*.yaml``) trains ``--iters`` iterations
   with AMP (``SOLVER.AMP.ENABLED``) and evaluates on its test set (``train_net.py``, one process
   each); its exit code, last losses and AP go to ``train.md``.
2. With those weights, CUDA and CPU inference (fp32) of the first 4 test images are compared:
   matched detections' scores and boxes, and their masks' IoU, in ``agreement.md``.
3. ``tools/benchmark.py --device cuda --input-size 800x1333`` on every COCO R-50 config with
   untrained weights (model-only and end-to-end latency, CUDA-synchronised, with and without
   AMP): ``latency_R50_800x1333_cuda.md``.
``--device cpu`` runs the same steps on the CPU (a smoke test of the script; no AMP, no
CUDA-CPU agreement).
"""

import argparse
import glob
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COCO_R50 = [
    "configs/MaskRCNN/MaskRCNN_R_50_1x.yaml",
    "configs/FCOS/FCOS_R_50_1x.yaml",
    "configs/CondInst/CondInst_MS_R_50_1x.yaml",
    "configs/BlendMask/BlendMask_R_50_1x.yaml",
    "configs/SOLO/SOLO_R_50_1x.yaml",
    "configs/SOLO/DecoupledSOLO_R_50_1x.yaml",
    "configs/SOLO/SOLOv2_R_50_1x.yaml",
    "configs/SparseInst/SparseInst_GIAM_R_50_608.yaml",
    "configs/Transfiner/Transfiner_R_50_1x.yaml",
    "configs/DVIS/DVIS_R_50_700.yaml",
    "configs/MaskLab/MaskLab_R_50_1x.yaml",
    "configs/SemiConv/SemiConv_R_50_1x.yaml",
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--output-dir", default="gpu_check")
    p.add_argument("--configs", nargs="+", default=None)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--latency-iters", type=int, default=20)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--agreement-images", type=int, default=4)
    return p.parse_args(argv)


def train(config: str, out: str, iters: int, device: str) -> dict:
    opts = ["MODEL.DEVICE", device, "SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", "()",
            "SOLVER.WARMUP_ITERS", str(min(10, iters)), "TEST.EVAL_PERIOD", "0",
            "SOLVER.CHECKPOINT_PERIOD", "100000", "OUTPUT_DIR", out]  # fmt: skip
    if device == "cuda":
        opts += ["SOLVER.AMP.ENABLED", "True"]
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", config] + opts
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    with open(os.path.join(out, "log.txt.console"), "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    row = {"config": config, "exit": code, "wall_s": round(time.time() - t0, 1)}
    from instseg_d2.benchmark.sweep import eval_curve, read_metrics

    rows = read_metrics(out)
    losses = [r for r in rows if "total_loss" in r]
    if losses:
        row["first_loss"], row["last_loss"] = losses[0]["total_loss"], losses[-1]["total_loss"]
    curve = eval_curve(rows)
    if curve:
        row["segm_AP"] = curve[-1].get("segm/AP")
        row["box_AP"] = curve[-1].get("bbox/AP")
    return row


def agreement(config: str, weights: str, n_images: int) -> dict:
    """Matched detections of CUDA and CPU inference on the first test images."""
    import torch
    from detectron2.data import DatasetCatalog
    from detectron2.data import detection_utils as utils
    from detectron2.structures import pairwise_iou

    from instseg_d2.engine import build_config, load_model

    outs = {}
    for device in ("cpu", "cuda"):
        cfg = build_config(config, ["MODEL.DEVICE", device, "MODEL.WEIGHTS", weights])
        model = load_model(cfg, weights)
        dicts = DatasetCatalog.get(cfg.DATASETS.TEST[0])[:n_images]
        res = []
        for d in dicts:
            img = utils.read_image(d["file_name"], format=cfg.INPUT.FORMAT)
            x = {"image": torch.as_tensor(img.transpose(2, 0, 1).copy()), "height": img.shape[0],
                 "width": img.shape[1]}  # fmt: skip
            with torch.no_grad():
                res.append(model([x])[0]["instances"].to("cpu"))
        outs[device] = res
    worst = {"score": 0.0, "box_iou": 1.0, "mask_iou": 1.0, "unmatched": 0, "detections": 0}
    for a, b in zip(outs["cpu"], outs["cuda"]):
        a, b = a[a.scores > 0.3], b[b.scores > 0.3]
        worst["detections"] += len(a)
        if len(a) == 0 or len(b) == 0:
            worst["unmatched"] += abs(len(a) - len(b))
            continue
        iou = pairwise_iou(a.pred_boxes, b.pred_boxes)
        best, j = iou.max(dim=1)
        worst["unmatched"] += int((best < 0.9).sum()) + abs(len(a) - len(b))
        ok = best >= 0.9
        if ok.any():
            worst["box_iou"] = min(worst["box_iou"], float(best[ok].min()))
            worst["score"] = max(
                worst["score"], float((a.scores[ok] - b.scores[j[ok]]).abs().max())
            )
            if a.has("pred_masks"):
                ma, mb = a.pred_masks[ok].flatten(1), b.pred_masks[j[ok]].flatten(1)
                inter, union = (ma & mb).sum(1), (ma | mb).sum(1).clamp(min=1)
                worst["mask_iou"] = min(worst["mask_iou"], float((inter / union).min()))
    return worst


def table(rows, cols) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append("-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    from instseg_d2.benchmark.machine import describe_machine, machine_line

    out = os.path.abspath(args.output_dir)
    os.makedirs(out, exist_ok=True)
    configs = args.configs or sorted(glob.glob(os.path.join("configs", "*", "shapes_*.yaml")))
    machine = machine_line(describe_machine(args.device))
    rows = []
    for c in configs:
        name = os.path.splitext(os.path.basename(c))[0]
        print(f"[gpu_check] training {c} ...", flush=True)
        rows.append(train(c, os.path.join(out, "runs", name), args.iters, args.device))
        rows[-1]["model"] = name
    with open(os.path.join(out, "train.md"), "w") as f:
        f.write(f"Machine: {machine}\n{args.iters} iterations, AMP: {args.device == 'cuda'}\n\n")
        f.write(table(rows, ["model", "exit", "wall_s", "first_loss", "last_loss", "segm_AP",
                             "box_AP"]) + "\n")  # fmt: skip
    if args.device == "cuda":
        agree = []
        for r in rows:
            w = os.path.join(out, "runs", r["model"], "model_final.pth")
            if r["exit"] == 0 and os.path.isfile(w):
                print(f"[gpu_check] CUDA vs CPU: {r['model']} ...", flush=True)
                try:
                    agree.append(
                        {"model": r["model"], **agreement(r["config"], w, args.agreement_images)}
                    )
                except Exception as e:  # noqa: BLE001 -- reported in the table
                    agree.append({"model": r["model"], "error": f"{type(e).__name__}: {e}"[:120]})
        with open(os.path.join(out, "agreement.md"), "w") as f:
            f.write(f"Machine: {machine}\nCUDA vs CPU inference (fp32), detections with score "
                    "> 0.3 matched by box IoU >= 0.9; worst case over the images\n\n")  # fmt: skip
            f.write(table(agree, ["model", "detections", "unmatched", "score", "box_iou",
                                  "mask_iou", "error"]) + "\n")  # fmt: skip
    if not args.skip_latency:
        for amp in (False, True) if args.device == "cuda" else (False,):
            cmd = [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--device",
                   args.device, "--input-size", "800x1333", "--iters", str(args.latency_iters),
                   "--warmup", "5", "--no-eval", "--output-dir",
                   os.path.join(out, "latency_amp" if amp else "latency")]  # fmt: skip
            for c in COCO_R50:
                cmd += ["--config-file", c, "--weights", "-"]
            if amp:
                cmd += ["--amp"]
            cmd += ["--opts", "MODEL.WEIGHTS", ""]
            print("[gpu_check] " + " ".join(cmd), flush=True)
            subprocess.call(cmd, cwd=ROOT)
    print(f"[gpu_check] results in {out}", flush=True)
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
