"""``tools/compare.py``'s library: the sweep, the per-model measurements and the report."""

import json
import os
import shlex
from typing import Dict, List, Sequence

from .comparison import (
    csv_rows,
    machine_time,
    markdown,
    plot_ap_vs_latency,
    plot_curves,
    prediction_grid,
    write_csv,
)
from .machine import describe_machine, machine_line
from .records import (
    decode_predictions,
    encode_predictions,
    restore_records,
    stored_predictions,
    write_records,
)
from .runner import run_worker
from .sweep import Run, write_json, finished_runs, load_results, run_sweep


def _dir_name(model: str) -> str:
    """``SOLO/SOLOv2_R_18 [tag]`` -> ``SOLO_SOLOv2_R_18-tag``."""
    return model.replace("/", "_").replace(" [", "-").replace("]", "").replace(" ", "_")


def dataset_opts(datasets: Sequence[str]) -> List[str]:
    """``DATASETS.TRAIN/TEST`` selecting the first / last ``NAME=JSON:DIR`` of ``datasets``."""
    if not datasets:
        return []
    names = [d.partition("=")[0] for d in datasets]
    return ["DATASETS.TRAIN", f"('{names[0]}',)", "DATASETS.TEST", f"('{names[-1]}',)"]


def recipe(cfg) -> str:
    """The solver settings that differ between methods, e.g. ``SGD 0.02`` / ``AdamW 5e-05``."""
    s = cfg.SOLVER
    opt = "AdamW" if s.OPTIMIZER.upper() == "ADAMW" else "SGD"
    text = f"{opt} {s.BASE_LR:g}, wd {s.WEIGHT_DECAY:g}"
    if s.CLIP_GRADIENTS.ENABLED:
        text += f", clip {s.CLIP_GRADIENTS.CLIP_VALUE:g}"
    return text


def variant_opts(run_opts: Sequence[str], base_opts: Sequence[str]) -> List[str]:
    """The ``KEY VALUE`` pairs of a run's options that the base options do not set alike."""
    base = dict(zip(base_opts[::2], map(str, base_opts[1::2])))
    out: List[str] = []
    for k, v in zip(run_opts[::2], run_opts[1::2]):
        if base.get(k) != str(v):
            out += [k, str(v)]
    return out


def _build_cfg(config: str, opts: Sequence[str], datasets: Sequence[str]):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from ..data import parse_dataset_arg, register_coco_instances_checked
    from ..engine import build_config

    for spec in datasets:  # each once (the same files registered earlier are kept)
        name, json_file, image_root = parse_dataset_arg(spec)
        known = name in DatasetCatalog.list()
        if not known or MetadataCatalog.get(name).get("json_file") != os.path.abspath(json_file):
            register_coco_instances_checked(name, json_file, image_root, replace=known)
    return build_config(config, [str(o) for o in opts])


def _ensure_pretrained(cfgs) -> None:
    """Build the shared pretrained backbones the configs name, once, before any training."""
    from detectron2.utils.file_io import PathManager

    from ..pretrain import PREFIX

    for w in sorted({c.MODEL.WEIGHTS for c in cfgs if c.MODEL.WEIGHTS.startswith(PREFIX)}):
        print(f"[compare] pretrained backbone {w}: {PathManager.get_local_path(w)}", flush=True)


def finished_by_model(runs: Sequence[Run]) -> Dict[str, List[Run]]:
    """``{model: its finished runs}``, in the order of ``runs``."""
    out: Dict[str, List[Run]] = {}
    for r in runs:
        if r.done():
            out.setdefault(r.model, []).append(r)
    return out


def bench_models(runs: Sequence[Run], cache: str, device: str, datasets) -> Dict:
    """Params, GFLOPs, CPU / wall ms per image and peak memory of each model (the weights of
    its first finished run that has them), measured one model at a time; cached in ``cache``
    (``<report-dir>/bench``: a model is measured once, whichever sitting trained it)."""
    bench = {}
    os.makedirs(cache, exist_ok=True)
    for model, candidates in finished_by_model(runs).items():
        path = os.path.join(cache, _dir_name(model) + ".json")
        if os.path.isfile(path):
            with open(path) as f:
                bench[model] = json.load(f)
            continue
        run = next((r for r in candidates if _weights(r)), None)
        if run is None:
            print(f"[compare] {model}: no checkpoint of its runs here, its cost is not "
                  f"measured (no {_dir_name(model)}.json in {cache})", flush=True)  # fmt: skip
            continue
        print(f"[compare] measuring {model} ...", flush=True)
        spec = {
            "config_file": run.config, "device": device, "opts": list(run.opts),
            "weights": _weights(run), "eval": False,
            "num_images": 10, "warmup": 2, "iters": 10, "threads": 1, "register": list(datasets),
        }  # fmt: skip
        res = run_worker(spec)
        if "error" not in res:
            with open(path, "w") as f:
                json.dump(res, f, indent=1)
        bench[model] = res
    return bench


def _weights(run: Run) -> str:
    path = os.path.join(run.out_dir, "model_final.pth")
    return path if os.path.isfile(path) else ""


def grid_runs(runs: Sequence[Run]) -> Dict[str, List[Run]]:
    """:func:`finished_by_model` for the prediction grid: every model, but a variant
    (``model [tag]``) only when its config has no default run among ``runs``."""
    found = finished_by_model(runs)
    plain = {rs[0].config for m, rs in found.items() if not m.endswith("]")}
    return {m: rs for m, rs in found.items() if not m.endswith("]") or rs[0].config not in plain}


def grid_predictions(runs: Sequence[Run], files, cfg, score_thresh: float = 0.5):
    """One model's predictions (score >= ``score_thresh``) on the images ``files``: those its
    first run stored for them, else those of the first run with a checkpoint, then stored in
    that run's ``result.json`` (and so in its record). None when no run has either."""
    import torch
    from detectron2.data import detection_utils as utils

    from ..engine import load_model

    for run in runs:
        with open(run.result_path) as f:
            preds = stored_predictions(json.load(f), files)
        if preds is not None:
            return preds
    run = next((r for r in runs if _weights(r)), None)
    if run is None:
        return None
    model = load_model(cfg, _weights(run))
    preds = []
    for file in files:
        x = utils.read_image(file, format=cfg.INPUT.FORMAT)
        with torch.no_grad():
            out = model([{"image": torch.as_tensor(x.transpose(2, 0, 1).copy()),
                          "height": x.shape[0], "width": x.shape[1]}])[0]  # fmt: skip
        preds.append(encode_predictions(out["instances"].to("cpu"), score_thresh))
    with open(run.result_path) as f:
        result = json.load(f)
    result["grid"] = {"images": [os.path.basename(f) for f in files], "predictions": preds}
    write_json(run.result_path, result)
    return preds


def draw_grid(runs: Sequence[Run], path: str, datasets, n_images: int, device: str) -> List[str]:
    """Ground truth and every model's predictions (score >= 0.5) on the first ``n_images``
    images of the test set, drawn with detectron2's Visualizer (:func:`grid_predictions`).
    Returns the models left out (no stored predictions and no checkpoint)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data import detection_utils as utils
    from detectron2.utils.visualizer import ColorMode, Visualizer

    rows, left_out = [], []
    for model, candidates in grid_runs(runs).items():
        run = candidates[0]
        cfg = _build_cfg(run.config, list(run.opts) + ["MODEL.DEVICE", device], datasets)
        name = cfg.DATASETS.TEST[0]
        meta, dicts = MetadataCatalog.get(name), DatasetCatalog.get(name)[:n_images]
        images = [utils.read_image(d["file_name"], format="RGB") for d in dicts]
        if not rows:
            rows.append(("ground truth", [
                Visualizer(im, meta).draw_dataset_dict(d).get_image() for im, d in zip(images, dicts)
            ]))  # fmt: skip
        preds = grid_predictions(candidates, [d["file_name"] for d in dicts], cfg)
        if preds is None:
            left_out.append(model)
            continue
        drawn = []
        for im, p in zip(images, preds):
            inst = decode_predictions(p, im.shape[0], im.shape[1])
            v = Visualizer(im, meta, instance_mode=ColorMode.IMAGE)
            drawn.append(v.draw_instance_predictions(inst).get_image())
        rows.append((model, drawn))
    if len(rows) > 1:
        prediction_grid(rows, path)
    return left_out


def write_report(runs, report_dir, bench, recipes, header, with_grid=None, jobs=2) -> None:
    """The report folder: ``comparison.md`` / ``.csv``, the plots, the prediction grid (when
    ``with_grid``) and one record per finished run (``runs/``, :mod:`.records`)."""
    os.makedirs(report_dir, exist_ok=True)
    if with_grid:  # first: it stores the grid's predictions in the results
        left_out = with_grid(os.path.join(report_dir, "predictions.png"))
        if left_out:
            header += f"\nNot in the prediction grid (no checkpoint here): {', '.join(left_out)}."
    results = load_results(runs)
    write_records(results, runs, report_dir)
    rows = csv_rows(results, bench)
    write_csv(rows, os.path.join(report_dir, "comparison.csv"))
    text = f"{header}\n{machine_time(results, jobs)}\n\n{markdown(results, bench, recipes)}\n"
    with open(os.path.join(report_dir, "comparison.md"), "w") as f:
        f.write(text)
    plot_curves(results, os.path.join(report_dir, "curves.png"))
    if bench:
        plot_ap_vs_latency(results, bench, os.path.join(report_dir, "ap_vs_latency.png"),
                           header.splitlines()[0])  # fmt: skip


def main(args, configs: Sequence[str], model_name, repo_root: str, stress_opts, argv) -> int:
    device = args.device
    jobs = args.jobs or (1 if device == "cuda" else 2)
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
    root = os.path.abspath(args.output_root)
    report_dir = os.path.abspath(args.report_dir or os.path.join(root, "report"))
    datasets = list(args.dataset)
    opts = (stress_opts if args.variant == "stress" else []) + dataset_opts(datasets)
    opts += ["MODEL.DEVICE", device] + (["SOLVER.AMP.ENABLED", "True"] if device == "cuda" else [])
    opts += list(args.opts)
    if args.tag:
        base_name = model_name
        model_name = lambda c: f"{base_name(c)} [{args.tag}]"  # noqa: E731
    cfgs = {c: _build_cfg(c, opts, datasets) for c in configs}
    recipes = {model_name(c): recipe(cfg) for c, cfg in cfgs.items()}
    runs = [
        Run(model_name(c), c, s, os.path.join(root, "runs", f"{_dir_name(model_name(c))}_seed{s}"), opts)
        for c in configs for s in args.seeds
    ]  # fmt: skip
    # runs finished in an earlier sitting, possibly on another machine: their records
    max_iters = {c: cfg.SOLVER.MAX_ITER for c, cfg in cfgs.items()}
    for r in restore_records(report_dir, root, runs, max_iters):
        print(f"[compare] {r.model} seed {r.seed}: finished earlier (its record)", flush=True)
    some = next(iter(cfgs.values()))
    header = (
        f"Machine: {machine_line(describe_machine(device))}\n"
        f"Data: train {some.DATASETS.TRAIN[0]}, test {some.DATASETS.TEST[0]}; seeds "
        f"{' '.join(map(str, args.seeds))}; AP at the last evaluation (mean (min-max) over "
        f"seeds); plateau: |AP(last) - AP(previous evaluation)| < 1 for every seed (largest "
        f"difference in brackets).\nCommand: `python tools/compare.py "
        f"{' '.join(shlex.quote(a) for a in argv[1:])}`"
    )
    if not args.report_only:
        _ensure_pretrained(cfgs.values())

        def on_done(run, result):
            write_report(runs, report_dir, {}, recipes, header, jobs=jobs)

        # every config's first seed first: the later seeds then start longest first (next_run)
        by_seed = sorted(runs, key=lambda r: args.seeds.index(r.seed))
        stop = os.path.join(root, "STOP")
        if os.path.exists(stop):
            os.remove(stop)  # left by the previous sitting
        run_sweep(by_seed, repo_root, jobs=jobs, threads=threads, datasets=datasets,
                  on_done=on_done, stop_file=stop)  # fmt: skip
    # the report: these runs and every other finished run of these configs and seeds in the
    # output root (e.g. variants trained by another call with --tag)
    others = [r for r in finished_runs(root, configs, args.seeds) if r.out_dir not in
              {x.out_dir for x in runs}]  # fmt: skip
    missing = [f"{r.model} seed {r.seed}" for r in runs if not r.done()]
    if missing:  # a partial report says what it lacks
        header += f"\nNot finished (not in the table): {', '.join(missing)}."
    runs = [r for r in runs if r.done()] + others
    for r in others:
        if r.model not in recipes:  # a variant: its recipe and what it changes
            changed = variant_opts(r.opts, opts)
            recipes[r.model] = recipe(_build_cfg(r.config, r.opts, datasets)) + (
                f"; {' '.join(changed)}" if changed else ""
            )
    cache = os.path.join(report_dir, "bench")
    bench = {} if args.no_bench else bench_models(runs, cache, device, datasets)
    grid = lambda path: draw_grid(runs, path, datasets, args.grid_images, device)  # noqa
    write_report(runs, report_dir, bench, recipes, header, with_grid=grid, jobs=jobs)
    print(f"[compare] report: {report_dir}/comparison.md", flush=True)
    if missing:
        print(f"[compare] not finished: {', '.join(missing)}", flush=True)
        return 1
    return 0
