"""The one trainer for every method."""

import logging
import os
import weakref
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..data import InstanceDatasetMapper
from ..utils.rng import preserved_rng
from .checkpoint import META_KEY, InstSegCheckpointer
from .evaluation import build_coco_evaluator
from .health import DetectionCounter, TrainingHealth, zero_ap_without_detections
from .num_classes import dataset_classes
from .optimizer import build_optimizer

logger = logging.getLogger(__name__)


class AutocastTrainer(AMPTrainer):
    """detectron2's AMPTrainer (fp16 + grad scaler) on CUDA; bfloat16 autocast on CPU."""

    def run_step(self):
        if torch.cuda.is_available() and next(self.model.parameters()).is_cuda:
            return super().run_step()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return SimpleTrainer.run_step(self)


def checkpoint_meta(cfg, thing_classes: Optional[Sequence[str]] = None) -> dict:
    """What a checkpoint records of its model: the meta-architecture and the classes (those of
    the config's first dataset, or ``thing_classes`` when given)."""
    if thing_classes is None:
        names = list(cfg.DATASETS.TRAIN) or list(cfg.DATASETS.TEST)
        thing_classes = dataset_classes(names[0]) if names else None
    return {
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "thing_classes": list(thing_classes) if thing_classes is not None else None,
    }


class Trainer(DefaultTrainer):
    """:class:`DefaultTrainer` with the project's data, evaluation, optimizer and checkpoints.

    * training loader: :class:`InstanceDatasetMapper` (one mapper for all methods);
    * evaluation: COCOEvaluator (boxes derived from masks where a method has none), every
      ``TEST.EVAL_PERIOD`` iterations and at the end; ``model_best.pth`` keeps the weights of
      the best ``TEST.BEST_CHECKPOINT_METRIC`` (segm AP); an evaluation without any detection
      reports AP 0 and says why (not ``nan``);
    * health check at the end of training (:mod:`instseg_d2.engine.health`): stalled loss
      terms and evaluations without detections are listed in ``health_problems`` and logged;
    * optimizer: :func:`build_optimizer` (SGD / AdamW, backbone multiplier, clipping);
    * AMP with ``SOLVER.AMP.ENABLED`` (fp16 on CUDA, bfloat16 on CPU);
    * DDP over GPUs (NCCL) or CPU processes (gloo) with ``--num-gpus N``.
    """

    def __init__(self, cfg):
        # DefaultTrainer.__init__'s steps, in its order, with three parts it cannot take as
        # arguments: DDP of a CPU model (its create_ddp_model passes device_ids, which CPU
        # modules refuse), the CPU autocast loop (its AMPTrainer is CUDA fp16 only) and the
        # project's checkpointer (reference-format conversion, class metadata).
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        if comm.get_world_size() > 1:
            on_gpu = next(model.parameters()).is_cuda
            model = DistributedDataParallel(
                model,
                device_ids=[comm.get_local_rank()] if on_gpu else None,
                broadcast_buffers=False,
            )
        loop = AutocastTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = loop(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = InstSegCheckpointer(
            model, cfg.OUTPUT_DIR, meta=checkpoint_meta(cfg), trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        ret = super().build_hooks()
        # the same evaluation, recording which datasets got no detection for the health check
        at = next(i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook))
        ret[at] = hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, self._evaluate_and_record)
        ret.append(TrainingHealth(self.cfg.TEST.STALL_ITERS, self.cfg.TEST.STALL_TOLERANCE))
        metric = self.cfg.TEST.BEST_CHECKPOINT_METRIC
        if self.cfg.TEST.EVAL_PERIOD > 0 and metric and comm.is_main_process():
            at = next(i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook)) + 1
            ret.insert(
                at, hooks.BestCheckpointer(self.cfg.TEST.EVAL_PERIOD, self.checkpointer, metric)
            )
        return ret

    def train(self):
        """Train; return the results of the last evaluation (None if there was none).
        Afterwards ``health_problems`` lists what the health check found (empty: none)."""
        self.health_problems: List[str] = []
        super().train()
        return getattr(self, "_last_eval_results", None)

    def _evaluate_and_record(self):
        # an evaluation between steps leaves the training's random draws as they were
        with preserved_rng():
            self._last_eval_results, self.last_eval_problems = self.evaluate(self.cfg, self.model)
        return self._last_eval_results

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """detectron2's ``test``; with the project's evaluators (``evaluators=None``) an
        evaluation without any detection reports AP 0 and says why (see :meth:`evaluate`)."""
        if evaluators is not None:
            return super().test(cfg, model, evaluators)
        return cls.evaluate(cfg, model)[0]

    @classmethod
    def evaluate(cls, cfg, model) -> Tuple[dict, List[str]]:
        """Evaluate on every ``DATASETS.TEST`` set; return ``(results, problems)``.

        ``results`` as :meth:`test` (``{task: metrics}`` for one dataset, else keyed by
        dataset); a dataset on which the model made no detection at all gets AP 0 instead of
        ``nan`` and a line in ``problems`` (see :func:`zero_ap_without_detections`)."""
        names = list(cfg.DATASETS.TEST)
        counters = [DetectionCounter(cls.build_evaluator(cfg, name)) for name in names]
        results = super().test(cfg, model, counters) if names else OrderedDict()
        per_dataset = results if len(names) > 1 else {names[0]: results} if names else {}
        problems = []
        for name, counter in zip(names, counters):
            if counter.num_detections == 0 and per_dataset.get(name):
                problems += zero_ap_without_detections(per_dataset[name], name)
        return results, problems

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=InstanceDatasetMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=InstanceDatasetMapper(cfg, False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_coco_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)


def load_model(
    cfg, weights: str = "", thing_classes: Optional[Sequence[str]] = None
) -> torch.nn.Module:
    """``cfg``'s model in eval mode, with ``weights`` loaded strictly (the checkpoint must be of
    this meta-architecture and these classes, see :class:`InstSegCheckpointer`); ``""``: the
    random initialisation. ``thing_classes``: the model's classes when the config's datasets do
    not give them (see :func:`checkpoint_meta`). For tools that run a trained model outside
    ``train_net.py``."""
    model = Trainer.build_model(cfg)
    if weights:
        meta = checkpoint_meta(cfg, thing_classes)
        InstSegCheckpointer(model, meta=meta, strict=True).load(weights)
    return model.eval()


class _RecordReader(InstSegCheckpointer):
    """Reads a checkpoint file (as :class:`InstSegCheckpointer` does) without loading it into
    a model."""

    def _load_model(self, checkpoint):
        return None


def recorded_meta(weights: str) -> dict:
    """The ``instseg_meta`` record of checkpoint ``weights`` (a path, URL or ``detectron2://``;
    ``meta_architecture``, ``thing_classes``), ``{}`` for a checkpoint saved elsewhere."""
    checkpoint = _RecordReader(torch.nn.Module()).load(weights, checkpointables=[])
    return dict(checkpoint.get(META_KEY) or {})
