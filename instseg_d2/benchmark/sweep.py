"""The comparison sweep: train every (config, seed) with ``train_net.py``, keep the AP curves.

Each run is ``train_net.py --resume --config-file C SEED s OUTPUT_DIR <root>/runs/<model>_seed<s>``
in its own process (``threads`` torch threads), ``jobs`` of them at a time. A run that has its
``result.json`` is done and never trained again; an interrupted one continues from its last
checkpoint. ``result.json`` holds the final COCO metrics and the AP-vs-iteration curve that the
periodic evaluations (``TEST.EVAL_PERIOD``) logged to detectron2's ``metrics.json``.
"""

import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Dict, List, Optional, Sequence

TASKS = {"segm": "segm", "bbox": "box", "boundary": "boundary"}
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclass
class Run:
    """One training of the sweep."""

    model: str  # display name, e.g. "SOLO/SOLOv2_R_18"
    config: str
    seed: int
    out_dir: str
    opts: List[str] = field(default_factory=list)

    @property
    def result_path(self) -> str:
        return os.path.join(self.out_dir, "result.json")

    def done(self) -> bool:
        return os.path.isfile(self.result_path)


def read_metrics(out_dir: str) -> List[dict]:
    """The records of detectron2's ``metrics.json`` of a run (one per logged iteration)."""
    path = os.path.join(out_dir, "metrics.json")
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a kill: the run resumes past it
                    continue
    return rows


def eval_curve(rows: List[dict]) -> List[dict]:
    """``[{"iteration": n, "segm/AP": .., "bbox/AP": .., ...}]`` of the evaluations after ``n``
    training iterations, one per ``n`` (the last record wins when a resumed run evaluated
    twice). detectron2 logs a periodic evaluation at iteration ``n - 1`` and the final one, after
    the last step, at ``n``."""
    trained = max((r["iteration"] + 1 for r in rows if "total_loss" in r), default=0)
    by_iter: Dict[int, dict] = {}
    for r in rows:
        metrics = {k: v for k, v in r.items() if "/" in k and k.split("/")[0] in TASKS}
        if metrics:
            by_iter.setdefault(min(r["iteration"] + 1, trained), {}).update(metrics)
    return [{"iteration": i, **by_iter[i]} for i in sorted(by_iter)]


_STAMP = re.compile(r"^\[(\d\d/\d\d \d\d:\d\d:\d\d)\] ")
_SITTING_START = "Rank of current process:"  # detectron2's first log line of each start


def logged_seconds(out_dir: str) -> Optional[float]:
    """Seconds a run spent training and evaluating, summed over its sittings: per start of
    ``train_net.py`` (a ``Rank of current process:`` line of detectron2's ``log.txt``), the time
    from that line to the last time-stamped line before the next start. A sitting killed
    between two log lines loses the time since its last line (at most 20 iterations,
    detectron2's logging period).
    None when the run has no log."""
    path = os.path.join(out_dir, "log.txt")
    if not os.path.isfile(path):
        return None
    total, first, last = 0.0, None, None
    year = 2000  # the log has no year: a stamp earlier than the previous one is a new year
    with open(path, errors="replace") as f:
        for line in f:
            m = _STAMP.match(line)
            if not m:
                continue
            t = datetime.strptime(f"{year}/{m.group(1)}", "%Y/%m/%d %H:%M:%S")
            if last is not None and t < last - timedelta(days=1):
                year += 1
                t = t.replace(year=year)
            if _SITTING_START in line or first is None:
                if first is not None:
                    total += (last - first).total_seconds()
                first = t
            last = t
    return total + (last - first).total_seconds() if first is not None else None


def run_minutes(out_dir: str) -> Optional[float]:
    """Minutes of training and evaluations of the run in ``out_dir``, every sitting
    (:func:`logged_seconds`), to 2 decimals; None without a log."""
    seconds = logged_seconds(out_dir)
    return None if seconds is None else round(seconds / 60, 2)


def run_result(run: Run) -> dict:
    """Final metrics, curve, plateau (from its ``metrics.json``) and ``run_min`` (minutes of
    training and evaluations, every sitting: :func:`logged_seconds`) of a finished run."""
    rows = read_metrics(run.out_dir)
    curve = eval_curve(rows)
    res = {"model": run.model, "config": run.config, "seed": run.seed, "opts": list(run.opts)}
    res["curve"] = curve
    trained = [r["iteration"] + 1 for r in rows if "total_loss" in r]
    res["iterations"] = max(trained) if trained else 0
    times = [r["time"] for r in rows if "time" in r]
    res["train_s_per_iter"] = sorted(times)[len(times) // 2] if times else None
    res["run_min"] = run_minutes(run.out_dir)
    if curve:
        last = curve[-1]
        for task, prefix in TASKS.items():
            for m in METRICS:
                v = last.get(f"{task}/{m}")
                if v is not None:
                    res[f"{prefix}_{m}"] = float(v)
        key = "segm/AP" if "segm/AP" in last else "bbox/AP"
        aps = [c[key] for c in curve if key in c]
        res["plateau_delta"] = abs(aps[-1] - aps[-2]) if len(aps) >= 2 else None
    return res


def train_command(run: Run, repo_root: str, datasets: Sequence[str] = ()) -> List[str]:
    cmd = [sys.executable, os.path.join(repo_root, "train_net.py"), "--resume"]
    cmd += ["--config-file", run.config]
    for d in datasets:
        cmd += ["--dataset", d]
    return cmd + ["SEED", str(run.seed), "OUTPUT_DIR", run.out_dir] + list(run.opts)


def run_sweep(
    runs: Sequence[Run],
    repo_root: str,
    jobs: int = 1,
    threads: int = 1,
    datasets: Sequence[str] = (),
    on_done: Optional[Callable[[Run, dict], None]] = None,
    poll_s: float = 2.0,
    stop_file: str = "",
) -> Dict[str, dict]:
    """Train the runs that are not done, ``jobs`` at a time; write each ``result.json`` (or an
    ``error`` entry) as soon as its run ends and call ``on_done(run, result)``. Once
    ``stop_file`` exists, start no more runs: the running ones finish, the others wait for the
    next sitting. Returns ``{out_dir: result}`` of the runs trained now."""
    todo = [r for r in runs if not r.done()]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    running: List[tuple] = []
    finished: Dict[str, dict] = {}
    while todo or running:
        if todo and stop_file and os.path.exists(stop_file):
            left = ", ".join(f"{r.model} seed {r.seed}" for r in todo)
            print(f"[sweep] {stop_file} exists: not starting {left}", flush=True)
            todo = []
        while todo and len(running) < jobs:
            run = todo.pop(next_run(todo, runs))
            os.makedirs(run.out_dir, exist_ok=True)
            cmd = train_command(run, repo_root, datasets)
            print(f"[sweep] start {run.model} seed {run.seed}: {' '.join(cmd)}", flush=True)
            log = open(os.path.join(run.out_dir, "train.log"), "a")
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, cwd=repo_root, env=env
            )
            running.append((run, proc, log))
        time.sleep(poll_s)
        for item in list(running):
            run, proc, log = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            result = run_result(run)
            if proc.returncode != 0:
                result["error"] = (
                    f"train_net.py exited {proc.returncode}; see {run.out_dir}/train.log"
                )
                print(f"[sweep] FAILED {run.model} seed {run.seed}: {result['error']}", flush=True)
            else:
                write_json(run.result_path, result)
                print(f"[sweep] done {run.model} seed {run.seed}: {ap_summary(result)}", flush=True)
            finished[run.out_dir] = result
            if on_done:
                on_done(run, result)
    return finished


def next_run(todo: Sequence[Run], runs: Sequence[Run]) -> int:
    """Index in ``todo`` of the run to start next: the first one whose config has no finished
    run among ``runs`` (its cost is unknown), else the one whose config's finished runs took
    longest (:func:`logged_seconds`). Longest first keeps both cores busy to the end of a
    sweep instead of leaving one idle beside a long last run."""
    took: Dict[str, float] = {}
    for r in runs:
        seconds = logged_seconds(r.out_dir) if r.done() else None
        if seconds is not None:
            took[r.config] = max(took.get(r.config, 0.0), seconds)
    for i, r in enumerate(todo):
        if r.config not in took:
            return i
    return max(range(len(todo)), key=lambda i: took[todo[i].config])


def ap_summary(result: dict) -> str:
    """The final APs of a run's result, e.g. "segm AP 63.26, box AP 58.23" ("box AP 41.52" for a
    detector), or a warning that it has none."""
    parts = [
        f"{name} {result[key]:.2f}"
        for key, name in (("segm_AP", "segm AP"), ("box_AP", "box AP"))
        if isinstance(result.get(key), (int, float)) and math.isfinite(result[key])
    ]
    return ", ".join(parts) or "WARNING: no AP in its metrics (did an evaluation run?)"


def finished_runs(root: str, configs: Sequence[str], seeds: Sequence[int]) -> List[Run]:
    """Every finished run under ``<root>/runs`` of one of ``configs`` and ``seeds`` (whichever
    sweep trained it, variants included), ordered by config, model name and seed."""
    found = []
    for name in (
        sorted(os.listdir(os.path.join(root, "runs")))
        if os.path.isdir(os.path.join(root, "runs"))
        else []
    ):
        path = os.path.join(root, "runs", name, "result.json")
        if os.path.isfile(path):
            with open(path) as f:
                r = json.load(f)
            if r["config"] in configs and r["seed"] in seeds:
                out_dir = os.path.join(root, "runs", name)
                found.append(Run(r["model"], r["config"], r["seed"], out_dir, r.get("opts", [])))
    order = {c: i for i, c in enumerate(configs)}
    return sorted(found, key=lambda r: (order[r.config], r.model, r.seed))


def load_results(runs: Sequence[Run]) -> List[dict]:
    """The ``result.json`` of every finished run, in the order of ``runs``, with ``run_min``:
    the minutes it trained and evaluated (:func:`logged_seconds`, all sittings; a run whose log
    is not here keeps the ``run_min`` its result already has)."""
    out = []
    for r in runs:
        if r.done():
            with open(r.result_path) as f:
                res = json.load(f)
            minutes = run_minutes(r.out_dir)
            if minutes is not None or "run_min" not in res:
                res["run_min"] = minutes
            out.append(res)
    return out


def write_json(path: str, data) -> None:
    """Write ``data`` to ``path`` as JSON, atomically (a reader never sees half a file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
