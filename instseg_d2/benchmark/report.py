"""Tables (markdown, CSV) and the AP-vs-latency plot of a benchmark."""

import csv
import math
from typing import List

COLUMNS = [
    ("model", "name"),
    ("params (M)", "params_M"),
    ("GFLOPs", "gflops"),
    ("model ms", "model_ms"),
    ("e2e ms", "e2e_ms"),
    ("CPU ms", "cpu_ms"),
    ("peak mem (MB)", "peak_mem_MB"),
    ("train peak mem (MB)", "train_peak_mem_MB"),
    ("segm AP", "segm.AP"),
    ("AP50", "segm.AP50"),
    ("AP75", "segm.AP75"),
    ("APs", "segm.APs"),
    ("APm", "segm.APm"),
    ("APl", "segm.APl"),
    ("box AP", "bbox.AP"),
    ("boundary AP", "boundary.AP"),
]


def _get(row: dict, key: str):
    v = row
    for part in key.split("."):
        if not isinstance(v, dict) or part not in v:
            return None
        v = v[part]
    return v


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.2f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def active_columns(rows: List[dict]):
    """Columns that at least one row has, plus one column per recorded stage."""
    cols = [(h, k) for h, k in COLUMNS if k == "name" or any(_get(r, k) is not None for r in rows)]
    stages = sorted({s for r in rows for s in (r.get("stages_ms") or {})})
    cols += [(f"{s} ms", f"stages_ms.{s}") for s in stages]
    if any(r.get("error") for r in rows):
        cols.append(("error", "error"))
    return cols


def markdown_table(rows: List[dict]) -> str:
    cols = active_columns(rows)
    lines = ["| " + " | ".join(h for h, _ in cols) + " |"]
    lines.append("|" + "|".join(":---" if k == "name" else "---:" for _, k in cols) + "|")
    for r in rows:
        lines.append("| " + " | ".join(_fmt(_get(r, k)) for _, k in cols) + " |")
    return "\n".join(lines)


def write_csv(rows: List[dict], path: str) -> None:
    cols = active_columns(rows)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([h for h, _ in cols])
        for r in rows:
            w.writerow(["" if _get(r, k) is None else _get(r, k) for _, k in cols])


def scatter_plot(points: List[tuple], path: str, xlabel: str, ylabel: str, title: str,
                 figsize=(7, 5)) -> bool:  # fmt: skip
    """Write a labelled scatter plot of ``points``: ``(x, y, label)`` or ``(x, y, label, (lo,
    hi))`` with a vertical bar from lo to hi; a logarithmic x axis when the x values span more
    than a factor 20. False (nothing written) if there is no point."""
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    for x, y, label, *bar in points:
        if bar:
            lo, hi = bar[0]
            ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], fmt="o", capsize=3)
        else:
            ax.scatter([x], [y])
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    xs = [p[0] for p in points]
    if min(xs) > 0 and max(xs) > 20 * min(xs):
        ax.set_xscale("log")
        xlabel = f"{xlabel}, log scale"
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_plot(rows: List[dict], path: str, title: str) -> bool:
    """AP (segm, else box) against end-to-end latency; False if no row has both."""
    pts = []
    for r in rows:
        ap = _get(r, "segm.AP")
        ap = _get(r, "bbox.AP") if ap is None else ap
        if ap is not None and r.get("e2e_ms") is not None:
            pts.append((r["e2e_ms"], ap, r["name"]))
    return scatter_plot(
        pts, path, "end-to-end latency (ms / image)", "COCO AP (segm; box where no masks)", title
    )
