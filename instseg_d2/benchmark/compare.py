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
from .runner import run_worker
from .sweep import Run, finished_runs, load_results, run_sweep


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


def first_finished(runs: Sequence[Run]) -> Dict[str, Run]:
    """``{model: its first finished run}``, in the order of ``runs``."""
    first: Dict[str, Run] = {}
    for r in runs:
        if r.done():
            first.setdefault(r.model, r)
    return first


def bench_models(runs: Sequence[Run], root: str, device: str, datasets) -> Dict:
    """Params, GFLOPs, CPU / wall ms per image and peak memory of each model (its first
    finished run's weights), measured one model at a time; cached in ``<root>/bench``."""
    bench = {}
    os.makedirs(os.path.join(root, "bench"), exist_ok=True)
    for model, run in first_finished(runs).items():
        path = os.path.join(root, "bench", _dir_name(model) + ".json")
        if os.path.isfile(path):
            with open(path) as f:
                bench[model] = json.load(f)
            continue
        print(f"[compare] measuring {model} ...", flush=True)
        spec = {
            "config_file": run.config, "device": device, "opts": list(run.opts),
            "weights": os.path.join(run.out_dir, "model_final.pth"), "eval": False,
            "num_images": 10, "warmup": 2, "iters": 10, "threads": 1, "register": list(datasets),
        }  # fmt: skip
        res = run_worker(spec)
        if "error" not in res:
            with open(path, "w") as f:
                json.dump(res, f, indent=1)
        bench[model] = res
    return bench


def grid_runs(runs: Sequence[Run]) -> Dict[str, Run]:
    """:func:`first_finished` for the prediction grid: every model, but a variant
    (``model [tag]``) only when its config has no default run among ``runs``."""
    first = first_finished(runs)
    plain = {r.config for m, r in first.items() if not m.endswith("]")}
    return {m: r for m, r in first.items() if not m.endswith("]") or r.config not in plain}


def draw_grid(runs: Sequence[Run], path: str, datasets, n_images: int, device: str):
    """Ground truth and every model's predictions (its first finished run, score >= 0.5) on
    the first ``n_images`` images of the test set, drawn with detectron2's Visualizer."""
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data import detection_utils as utils
    from detectron2.utils.visualizer import ColorMode, Visualizer

    from ..engine import load_model

    first = grid_runs(runs)
    if not first:
        return False
    rows = []
    for i, (model, run) in enumerate(first.items()):
        cfg = _build_cfg(run.config, list(run.opts) + ["MODEL.DEVICE", device], datasets)
        name = cfg.DATASETS.TEST[0]
        meta, dicts = MetadataCatalog.get(name), DatasetCatalog.get(name)[:n_images]
        images = [utils.read_image(d["file_name"], format="RGB") for d in dicts]
        if i == 0:
            rows.append(("ground truth", [
                Visualizer(im, meta).draw_dataset_dict(d).get_image() for im, d in zip(images, dicts)
            ]))  # fmt: skip
        model_ = load_model(cfg, os.path.join(run.out_dir, "model_final.pth"))
        drawn = []
        for im, d in zip(images, dicts):
            x = utils.read_image(d["file_name"], format=cfg.INPUT.FORMAT)
            with torch.no_grad():
                out = model_([{"image": torch.as_tensor(x.transpose(2, 0, 1).copy()),
                               "height": x.shape[0], "width": x.shape[1]}])[0]  # fmt: skip
            inst = out["instances"].to("cpu")
            inst = inst[inst.scores >= 0.5]
            v = Visualizer(im, meta, instance_mode=ColorMode.IMAGE)
            drawn.append(v.draw_instance_predictions(inst).get_image())
        rows.append((model, drawn))
    prediction_grid(rows, path)
    return True


def write_report(runs, report_dir, bench, recipes, header, with_grid=None, jobs=2) -> None:
    os.makedirs(report_dir, exist_ok=True)
    results = load_results(runs)
    rows = csv_rows(results, bench)
    write_csv(rows, os.path.join(report_dir, "comparison.csv"))
    text = f"{header}\n{machine_time(results, jobs)}\n\n{markdown(results, bench, recipes)}\n"
    with open(os.path.join(report_dir, "comparison.md"), "w") as f:
        f.write(text)
    plot_curves(results, os.path.join(report_dir, "curves.png"))
    if bench:
        plot_ap_vs_latency(results, bench, os.path.join(report_dir, "ap_vs_latency.png"),
                           header.splitlines()[0])  # fmt: skip
    if with_grid:
        with_grid(os.path.join(report_dir, "predictions.png"))


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
        run_sweep(
            by_seed, repo_root, jobs=jobs, threads=threads, datasets=datasets, on_done=on_done
        )
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
    bench = {} if args.no_bench else bench_models(runs, root, device, datasets)
    grid = lambda path: draw_grid(runs, path, datasets, args.grid_images, device)  # noqa
    write_report(runs, report_dir, bench, recipes, header, with_grid=grid, jobs=jobs)
    print(f"[compare] report: {report_dir}/comparison.md", flush=True)
    if missing:
        print(f"[compare] not finished: {', '.join(missing)}", flush=True)
        return 1
    return 0
