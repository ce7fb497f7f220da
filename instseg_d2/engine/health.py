"""Training health: a run that did not learn says so at its end, instead of looking finished.

Two checks, reported together in one warning at the end of training (and of ``--eval-only``):

* a loss term that **has not moved**: its median over the last ``TEST.STALL_ITERS`` iterations
  is within ``TEST.STALL_TOLERANCE`` (relative) of its median over the first iterations (see
  :func:`stalled_losses`). A term stuck at its initial value usually gets no gradient at all,
  e.g. FCOS's ``loss_fcos_loc`` when every positive location predicts a zero-width box
  (``projects/FCOS/NOTES.md``);
* an evaluation **without a single detection**: COCOEvaluator then reports AP ``nan``; here AP
  is reported as 0, with a warning that says why (:func:`zero_ap_without_detections`).

With ``TEST.STRICT_HEALTH`` train_net.py exits with :data:`UNHEALTHY_EXIT_CODE` when either
check finds a problem, for scripted sweeps.
"""

import logging
import math
from typing import Dict, List, Mapping, Sequence, Tuple

from detectron2.engine import HookBase
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

logger = logging.getLogger(__name__)

UNHEALTHY_EXIT_CODE = 3
# Iterations whose median is the "initial value" of a term: min(START_WINDOW, STALL_ITERS // 4).
START_WINDOW = 20


class DetectionCounter(DatasetEvaluator):
    """Wrap an evaluator; count the detections (``instances``) it is given, over all workers.

    ``num_detections`` is set by :meth:`evaluate` (which every worker calls)."""

    def __init__(self, evaluator: DatasetEvaluator):
        self._evaluator = evaluator
        self._count = 0
        self.num_detections = None

    def reset(self):
        self._count = 0
        self.num_detections = None
        self._evaluator.reset()

    def process(self, inputs, outputs):
        for out in outputs:
            inst = out.get("instances")
            self._count += 0 if inst is None else len(inst)
        self._evaluator.process(inputs, outputs)

    def evaluate(self):
        self.num_detections = sum(comm.all_gather(self._count))
        return self._evaluator.evaluate()


def zero_ap_without_detections(results: Mapping, dataset_name: str) -> List[str]:
    """In place: every ``nan`` metric of ``results`` (``{task: {metric: value}}``, one dataset,
    evaluated without any detection) becomes 0. Returns the problem, for the health report."""
    for metrics in results.values():
        if isinstance(metrics, dict):
            for k, v in metrics.items():
                if isinstance(v, float) and math.isnan(v):
                    metrics[k] = 0.0
    msg = (
        f"the evaluation of {dataset_name!r} found no detection at all: AP is reported as 0 "
        "(COCOEvaluator says nan). The model scores nothing above the test threshold, or "
        "post-processing dropped every detection (e.g. boxes of zero width)"
    )
    logger.warning("%s.", msg[0].upper() + msg[1:])
    return [msg]


def stalled_losses(
    histories: Mapping[str, Sequence[Tuple[float, int]]], stall_iters: int, tolerance: float
) -> Dict[str, Tuple[float, float]]:
    """Loss terms that have not moved: ``{name: (initial median, last median)}``.

    Args:
        histories: per metric name, its logged ``(value, iteration)`` pairs in order (as
            detectron2's ``EventStorage.histories()``); names not starting with ``loss`` are
            ignored.
        stall_iters: N; a term is checked when it was logged for at least
            ``N + min(20, N // 4)`` iterations. 0 disables the check.
        tolerance: relative; stalled when ``|m_last - m_0| <= tolerance * |m_0|``, with
            ``m_last`` the median over the last N iterations and ``m_0`` the median over the first
            ``min(20, N // 4)`` (at least 1) iterations (a term that is 0 throughout is stalled).
    """
    out = {}
    if stall_iters <= 0:
        return out
    start = max(1, min(START_WINDOW, stall_iters // 4))
    for name, pairs in histories.items():
        if not name.startswith("loss") or len(pairs) < stall_iters + start:
            continue
        values = [float(v) for v, _ in pairs]
        m0, m_last = _median(values[:start]), _median(values[-stall_iters:])
        if abs(m_last - m0) <= tolerance * abs(m0):
            out[name] = (m0, m_last)
    return out


def _median(x: Sequence[float]) -> float:
    s = sorted(x)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def stall_problems(stalled: Mapping[str, Tuple[float, float]], stall_iters: int) -> List[str]:
    return [
        f"{name} has not moved for the last {stall_iters} iterations: median {last:.4g}, "
        f"its initial median {first:.4g} (TEST.STALL_ITERS, TEST.STALL_TOLERANCE). A loss term "
        "that stays at its initial value usually gets no gradient"
        for name, (first, last) in stalled.items()
    ]


def report(problems: Sequence[str], strict: bool) -> str:
    """The loud end-of-run message listing ``problems`` (empty string if there are none)."""
    if not problems:
        return ""
    bar = "=" * 78
    lines = [bar, f"UNHEALTHY RUN: {len(problems)} problem(s); this model has probably not learned"]
    lines += [f"  - {p}" for p in problems]
    lines.append(
        f"Exiting with code {UNHEALTHY_EXIT_CODE} (TEST.STRICT_HEALTH True)."
        if strict
        else f"Set TEST.STRICT_HEALTH True to make such a run exit with code {UNHEALTHY_EXIT_CODE}."
    )
    return "\n".join(lines + [bar])


class TrainingHealth(HookBase):
    """After a finished training: the stalled loss terms (from the event storage) and the
    evaluations without detections (``trainer.last_eval_problems``) become
    ``trainer.health_problems``, logged as one warning. Register it after the EvalHook."""

    def __init__(self, stall_iters: int, tolerance: float):
        self.stall_iters = stall_iters
        self.tolerance = tolerance

    def after_train(self):
        trainer = self.trainer
        if trainer.iter + 1 < trainer.max_iter:
            return  # training failed or was interrupted: its exception is the message
        problems = []
        if comm.is_main_process():
            histories = {k: h.values() for k, h in trainer.storage.histories().items()}
            stalled = stalled_losses(histories, self.stall_iters, self.tolerance)
            problems += stall_problems(stalled, self.stall_iters)
        problems += list(getattr(trainer, "last_eval_problems", []))
        trainer.health_problems = problems
        if problems:
            logger.warning("\n%s", report(problems, strict=trainer.cfg.TEST.STRICT_HEALTH))
