"""Fill the figures the READMEs quote from the committed comparison CSV.

Two kinds of markers, each naming the models it shows (``model`` column of the CSV):

- ``<VALUE> <!-- AP: M1 M2 ... -->`` (a table cell): ``VALUE`` becomes each model's mean segm AP
  over its seeds (box AP for a model without masks), joined by `` / ``.
- ``<!-- results: M1 M2 ... -->`` ... ``<!-- /results -->`` (a block of its own lines): the lines
  between become a sentence on the protocol and a table of those models (seeds, iterations,
  segm AP mean and range, AP50, AP75, box AP, boundary AP).

A marker naming a model that the CSV lacks is an error naming the file, the line and the model.
"""

import csv
import os
import re
from typing import Dict, List, Optional, Sequence

from instseg_d2.benchmark.comparison import _num, by_model, summarize

AP_MARKER = re.compile(r"(?P<value>[^|]*?)\s*(?P<marker><!-- AP: (?P<models>[^>]*?) -->)")
BLOCK_START = re.compile(r"^<!-- results: (?P<models>.*?) -->\s*$")
BLOCK_END = "<!-- /results -->"
TABLE_COLUMNS = ["segm_AP50", "segm_AP75", "box_AP", "boundary_AP"]
NUMERIC = ["segm_AP"] + TABLE_COLUMNS


def _parse(v: Optional[str]) -> Optional[float]:
    """A CSV cell as a number: '' and 'nan' are None."""
    return _num(float(v)) if v not in (None, "") else None


def read_comparison(csv_path: str) -> Dict[str, List[dict]]:
    """The default-protocol rows of ``comparison.csv`` by model (variant rows ``M [TAG]`` are
    left out), in the file's order."""
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if "[" not in r["model"]]
    for row in rows:
        row.update({k: _parse(row.get(k)) for k in NUMERIC})
    out = by_model(rows)
    if not out:
        raise ValueError(f"{csv_path}: no rows of the default protocol")
    return out


def headline_ap(rows: Sequence[dict]) -> float:
    """Mean segm AP over seeds, or mean box AP for a model without masks."""
    s = summarize([r["segm_AP"] for r in rows]) or summarize([r["box_AP"] for r in rows])
    if s is None:
        raise ValueError(f"{rows[0]['model']}: neither segm AP nor box AP in the CSV")
    return s[0]


def _models(where: str, names: str, runs: Dict[str, List[dict]]) -> List[str]:
    models = names.split()
    missing = [m for m in models if m not in runs]
    if missing:
        raise KeyError(f"{where}: {', '.join(missing)} not in the comparison CSV")
    return models


def _fmt1(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f}"


def results_block(models: Sequence[str], runs: Dict[str, List[dict]], report_link: str,
                  reference: str) -> List[str]:  # fmt: skip
    """The lines of a ``results`` block: the protocol sentence and one table row per model."""
    ref = headline_ap(runs[reference])
    lines = [
        f"The comparison ([comparison.md]({report_link})): `shapes_cmp_val`, shapes-pretrained "
        "ResNet-18, the method's shapes config, AP at the last evaluation, mean over the seeds "
        f"(segm AP: range in brackets). The baseline, {reference}: segm AP {ref:.1f}.",
        "",
        "| model | seeds | iterations | segm AP | AP50 | AP75 | box AP | boundary AP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in models:
        rows = runs[m]
        seeds = ", ".join(r["seed"] for r in rows)
        iters = "/".join(sorted({r["iterations"] for r in rows}))
        s = summarize([r["segm_AP"] for r in rows])
        segm = "-" if s is None else f"{s[0]:.1f}" + (f" ({s[1]:.1f}-{s[2]:.1f})" * (len(rows) > 1))
        cells = [_fmt1((summarize([r[c] for r in rows]) or (None,))[0]) for c in TABLE_COLUMNS]
        lines.append(f"| {m} | {seeds} | {iters} | {segm} | " + " | ".join(cells) + " |")
    return lines


def fill_text(text: str, path: str, runs: Dict[str, List[dict]], report_link: str,
              reference: str) -> str:  # fmt: skip
    """``text`` (the file ``path``) with every marker filled from ``runs``."""
    out: List[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line, where = lines[i], f"{path}:{i + 1}"

        def cell(m: "re.Match") -> str:
            models = _models(where, m.group("models"), runs)
            aps = " / ".join(f"{headline_ap(runs[x]):.1f}" for x in models)
            lead = re.match(r"\s*", m.group("value")).group(0)
            return f"{lead}{aps} {m.group('marker')}"

        start = BLOCK_START.match(line)
        if start:
            models = _models(where, start.group("models"), runs)
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == BLOCK_END), None)
            if end is None:
                raise ValueError(f"{where}: results block without its '{BLOCK_END}' line")
            out += [line] + results_block(models, runs, report_link, reference) + [lines[end]]
            i = end + 1
            continue
        out.append(AP_MARKER.sub(cell, line))
        i += 1
    return "\n".join(out)


def fill_files(
    paths: Sequence[str], csv_path: str, reference: str, write: bool = True
) -> List[str]:
    """Fill the markers of every file in ``paths`` from ``csv_path`` (links to the report's
    ``comparison.md`` next to it, relative to each file); returns the files that changed (with
    ``write=False``: that would change, writing nothing)."""
    runs = read_comparison(csv_path)
    _models(f"{csv_path} (the reference model)", reference, runs)
    report = os.path.join(os.path.dirname(os.path.abspath(csv_path)), "comparison.md")
    filled = {}
    for p in paths:  # every file is filled before any is written
        with open(p) as f:
            text = f.read()
        link = os.path.relpath(report, os.path.dirname(os.path.abspath(p)))
        new = fill_text(text, p, runs, link, reference)
        if new != text:
            filled[p] = new
    for p, new in filled.items() if write else ():
        with open(p, "w") as f:
            f.write(new)
    return list(filled)
