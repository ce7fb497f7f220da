"""The comparison report: one row per (model, seed) in CSV, mean and range per model in
markdown, AP-vs-iteration curves, AP vs CPU latency, and every model's predictions on the same
validation images."""

import csv
import math
import statistics
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from instseg_d2.benchmark.report import scatter_plot

PER_RUN = ["segm_AP", "segm_AP50", "segm_AP75", "segm_APs", "segm_APm", "segm_APl", "box_AP",
           "boundary_AP"]  # fmt: skip
PER_MODEL = ["params_M", "gflops", "cpu_ms", "e2e_ms", "peak_mem_MB"]
CSV_COLUMNS = (["model", "config", "seed", "iterations"] + PER_RUN
               + ["plateau_delta", "train_s_per_iter", "run_min"] + PER_MODEL)  # fmt: skip
HEADERS = {
    "segm_AP": "segm AP", "segm_AP50": "AP50", "segm_AP75": "AP75", "segm_APs": "APs",
    "segm_APm": "APm", "segm_APl": "APl", "box_AP": "box AP", "boundary_AP": "boundary AP",
    "params_M": "params (M)", "gflops": "GFLOPs", "cpu_ms": "CPU ms", "e2e_ms": "wall ms",
    "peak_mem_MB": "peak mem (MB)",
}  # fmt: skip


def by_model(results: Sequence[dict]) -> "OrderedDict[str, List[dict]]":
    out: "OrderedDict[str, List[dict]]" = OrderedDict()
    for r in results:
        out.setdefault(r["model"], []).append(r)
    return out


def _num(v) -> Optional[float]:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def summarize(values: Sequence) -> Optional[tuple]:
    """(mean, min, max) of the numbers among ``values``; None if there are none."""
    xs = [x for x in map(_num, values) if x is not None]
    return (statistics.fmean(xs), min(xs), max(xs)) if xs else None


def _fmt_mean_range(s: Optional[tuple], n: int) -> str:
    if s is None:
        return "-"
    mean, lo, hi = s
    return f"{mean:.2f}" if n < 2 else f"{mean:.2f} ({lo:.2f}-{hi:.2f})"


def _fmt(v) -> str:
    v = _num(v)
    return "-" if v is None else f"{v:.2f}" if abs(v) < 1000 else f"{v:.0f}"


def csv_rows(results: Sequence[dict], bench: Dict[str, dict]) -> List[dict]:
    rows = []
    for r in results:
        row = {k: r.get(k) for k in CSV_COLUMNS}
        row.update({k: bench.get(r["model"], {}).get(k) for k in PER_MODEL})
        rows.append(row)
    return rows


def write_csv(rows: List[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for row in rows:
            w.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})


def markdown(results: Sequence[dict], bench: Dict[str, dict], recipes: Dict[str, str]) -> str:
    """Per model: mean (min-max) over seeds of the AP columns, the plateau check, the
    model's recipe and its cost columns."""
    cols = ["model", "seeds", "iterations"] + PER_RUN + ["plateau"] + PER_MODEL + ["recipe"]
    head = [HEADERS.get(c, c) for c in cols]
    lines = ["| " + " | ".join(head) + " |",
             "|:---|" + "---:|" * (len(cols) - 2) + ":---|"]  # fmt: skip
    for model, runs in by_model(results).items():
        n = len(runs)
        deltas = [_num(r.get("plateau_delta")) for r in runs]
        plateau = ("yes" if all(d is not None and d < 1.0 for d in deltas) else "no") + (
            f" ({max(d for d in deltas if d is not None):.2f})" if any(deltas) else ""
        )
        cells = [model, ",".join(str(r["seed"]) for r in runs),
                 "/".join(sorted({str(r.get("iterations")) for r in runs}))]  # fmt: skip
        cells += [_fmt_mean_range(summarize([r.get(k) for r in runs]), n) for k in PER_RUN]
        cells.append(plateau)
        cells += [_fmt(bench.get(model, {}).get(k)) for k in PER_MODEL]
        cells.append(recipes.get(model, ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_time(results: Sequence[dict], jobs: int = 2) -> str:
    """One line: the summed ``run_min`` (training + evaluations, every sitting) of the default
    runs and of the variants (``model [tag]``), in hours of one core and of the machine with
    ``jobs`` runs at a time."""

    def hours(rs):
        return sum(_num(r.get("run_min")) or 0.0 for r in rs) / 60

    default = [r for r in results if not r["model"].endswith("]")]
    variants = [r for r in results if r["model"].endswith("]")]
    text = (f"Machine time (training and evaluations, every sitting, from the runs' logs): "
            f"{hours(default):.1f} h for the {len(default)} default runs, one core each "
            f"({hours(default) / jobs:.1f} h at {jobs} runs at a time)")  # fmt: skip
    if variants:
        text += f"; {hours(variants):.1f} h for the {len(variants)} variant runs"
    unlogged = [r for r in results if _num(r.get("run_min")) is None]
    if unlogged:
        text += f"; {len(unlogged)} runs without a log not counted"
    return text + "."


def plot_curves(results: Sequence[dict], path: str, title: str = "") -> bool:
    """segm AP (box AP for detectors) against iteration, every model on one plot: one line per
    seed, one colour per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = by_model(results)
    if not groups:
        return False
    fig, ax = plt.subplots(figsize=(9, 6))
    cmap = plt.get_cmap("tab20")
    for i, (model, runs) in enumerate(groups.items()):
        for j, r in enumerate(runs):
            key = "segm/AP" if any("segm/AP" in c for c in r["curve"]) else "bbox/AP"
            pts = [(c["iteration"], c[key]) for c in r["curve"] if key in c]
            if not pts:
                continue
            xs, ys = zip(*pts)
            label = model + (" (box AP)" if key == "bbox/AP" else "") if j == 0 else None
            ax.plot(xs, ys, color=cmap(i % 20), marker="o", markersize=3, lw=1.2, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("COCO AP on the validation set")
    ax.set_title(title or "AP during training (one line per seed)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_ap_vs_latency(results: Sequence[dict], bench: Dict[str, dict], path: str,
                       title: str = "") -> bool:  # fmt: skip
    """Mean segm AP (box AP for detectors; bars: range over seeds) against CPU ms / image."""
    pts = []
    for model, runs in by_model(results).items():
        s = summarize([r.get("segm_AP") for r in runs]) or summarize(
            [r.get("box_AP") for r in runs]
        )
        x = _num(bench.get(model, {}).get("cpu_ms"))
        if s is not None and x is not None:
            pts.append((x, s[0], model, (s[1], s[2])))
    return scatter_plot(
        pts,
        path,
        "CPU time per image (ms, 1 thread, end to end)",
        "COCO segm AP (box AP for detectors)",
        title,
        figsize=(8, 5.5),
    )


def prediction_grid(rows: Sequence[tuple], path: str, cell: int = 192) -> None:
    """Write a grid image: one row per ``(label, [H x W x 3 uint8 RGB images])``, the label
    written left of its row, every image resized to ``cell`` x ``cell``."""
    import numpy as np
    from PIL import Image, ImageDraw

    label_w = 170
    n_cols = max(len(imgs) for _, imgs in rows)
    grid = Image.new("RGB", (label_w + n_cols * cell, len(rows) * cell), "white")
    draw = ImageDraw.Draw(grid)
    for i, (label, imgs) in enumerate(rows):
        draw.text((6, i * cell + cell // 2 - 6), label, fill="black")
        for j, img in enumerate(imgs):
            tile = Image.fromarray(np.asarray(img, dtype=np.uint8)).resize((cell, cell))
            grid.paste(tile, (label_w + j * cell, i * cell))
    grid.save(path)
