"""One-line summaries of COCO results for logs and the command line."""

from collections import OrderedDict
from typing import Mapping

SUMMARY_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def flatten_results(results: Mapping) -> "OrderedDict[str, Mapping]":
    """``{dataset: {task: {metric}}}`` or ``{task: {metric}}`` -> ``{"dataset/task": metrics}``."""
    out = OrderedDict()
    for k, v in results.items():
        if isinstance(v, Mapping) and v and all(isinstance(x, Mapping) for x in v.values()):
            for task, metrics in v.items():
                out[f"{k}/{task}"] = metrics
        elif isinstance(v, Mapping):
            out[k] = v
    return out


def summarize_results(results: Mapping) -> str:
    """E.g. ``shapes_val/segm: AP 41.20  AP50 70.10 ...`` one line per dataset and task."""
    lines = []
    for name, metrics in flatten_results(results).items():
        vals = "  ".join(f"{m} {metrics[m]:.2f}" for m in SUMMARY_METRICS if m in metrics)
        lines.append(f"{name}: {vals}")
    return "\n".join(lines)
