"""The one checkpoint format: detectron2's, plus a small record of what model it holds."""

import logging
import os
from typing import Optional
from urllib.parse import parse_qsl, urlencode, urlparse

import torch
from detectron2.checkpoint import DetectionCheckpointer

from .. import pretrain  # noqa: F401 -- registers MODEL.WEIGHTS instseg://pretrained/...
from ..plugins import load_method_packages
from .conversion import convert_reference_checkpoint, model_parts

logger = logging.getLogger(__name__)

META_KEY = "instseg_meta"


class CheckpointMismatchError(RuntimeError):
    """MODEL.WEIGHTS does not fit the model (wrong model, wrong classes); says what and where."""


class InstSegCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` (local paths, URLs, ``detectron2://``) with checks.

    * Every saved file records ``instseg_meta``: the meta-architecture and the classes.
    * A checkpoint that a converter of the model's modules recognises
      (:mod:`instseg_d2.engine.conversion`) is converted while loading: a published reference
      checkpoint (a file without that record), or e.g. a detectron2 ResNet-FPN for MaskLab's
      backbone. One line logs what was recognised and done. A reference checkpoint of another
      model is refused, naming both; the project's own checkpoints load unchanged.
    * URLs as the references publish them: a Hugging Face file page (``.../blob/...``) is
      read from the file itself (``.../resolve/...``), a ``?download=true`` query is ignored.
    * Loading parameters whose shapes differ (fine-tuning on other classes) re-initialises
      them, i.e. keeps the model's fresh initialisation, and logs the list of skipped keys.
    * ``strict=True`` (evaluation) refuses a checkpoint that leaves any parameter of the model
      missing or of another shape, or whose recorded classes differ from the model's.
    * A checkpoint sharing no parameter with the model is refused in any mode.
    * ``model_best`` saves do not move the ``last_checkpoint`` tag: ``--resume`` continues
      from the latest periodic checkpoint.
    """

    def __init__(self, model, save_dir="", *, meta: Optional[dict] = None, strict=False, **kw):
        super().__init__(model, save_dir, **kw)
        self.meta = dict(meta or {})
        self.strict = strict
        self._current_path = None

    # ---------------------------------------------------------------------------- saving
    def save(self, name: str, **kwargs) -> None:
        kwargs.setdefault(META_KEY, self.meta)
        if not name.startswith("model_best"):
            return super().save(name, **kwargs)
        last = self.get_checkpoint_file()
        super().save(name, **kwargs)
        if last and os.path.basename(last) != f"{name}.pth":
            self.tag_last_checkpoint(os.path.basename(last))

    # --------------------------------------------------------------------------- loading
    def load(self, path, *args, **kwargs):
        if path and "://" not in path and not os.path.isfile(path):
            raise FileNotFoundError(f"MODEL.WEIGHTS={path!r}: checkpoint file not found")
        self._current_path = path
        try:
            return super().load(published_file_url(path) if path else path, *args, **kwargs)
        finally:
            self._current_path = None

    def _load_file(self, filename):
        try:
            return super()._load_file(filename)
        except Exception as e:
            raise CheckpointMismatchError(
                f"Cannot read checkpoint {filename!r}: {type(e).__name__}: {e}"
            ) from e

    def _load_model(self, checkpoint):
        where = self._current_path or "(checkpoint)"
        ckpt_meta = checkpoint.get(META_KEY) or {}
        self._check_meta(ckpt_meta, where)
        if not checkpoint.get("matching_heuristics", False):  # not Caffe2 / pycls
            checkpoint["model"] = self._convert(checkpoint["model"], META_KEY not in checkpoint)
        n_ckpt = len(checkpoint.get("model", {}))
        incompatible = super()._load_model(checkpoint)
        model_keys = set(self.model.state_dict().keys())
        bad_shape = {k for k, *_ in incompatible.incorrect_shapes}
        loaded = model_keys - set(incompatible.missing_keys) - bad_shape
        if n_ckpt and not loaded:
            raise CheckpointMismatchError(
                f"Checkpoint {where!r} shares no parameter with the model "
                f"({self._model_name()}); is it a "
                f"checkpoint of another model? It holds e.g. {incompatible.unexpected_keys[:3]}"
            )
        if incompatible.incorrect_shapes:
            lines = [f"  {k}: checkpoint {s_c} -> model {s_m}" for k, s_c, s_m in
                     incompatible.incorrect_shapes]  # fmt: skip
            msg = (
                f"{len(lines)} parameter(s) of {where!r} have another shape than the model's "
                "(e.g. heads trained for other classes)"
            )
            if self.strict:
                raise CheckpointMismatchError(msg + ":\n" + "\n".join(lines))
            logger.warning(msg + "; they keep their fresh initialisation:\n" + "\n".join(lines))
        if self.strict and incompatible.missing_keys:
            raise CheckpointMismatchError(
                f"Checkpoint {where!r} lacks {len(incompatible.missing_keys)} parameter(s) of the "
                f"model, e.g. {incompatible.missing_keys[:5]}; evaluating would use random weights"
            )
        return incompatible

    def _convert(self, state: dict, raw: bool) -> dict:
        """``state`` through the model's converters; ``raw``: a file without ``instseg_meta``
        (a published reference checkpoint, or another model's, which is refused)."""
        where = self._current_path or "(checkpoint)"
        load_method_packages()  # every converter, to name a checkpoint of another model
        self._convert_ndarray_to_tensor(state)
        try:
            state, report = convert_reference_checkpoint(state, model_parts(self.model), raw)
        except ValueError as e:
            raise CheckpointMismatchError(
                f"Checkpoint {where!r} does not fit the model ({self._model_name()}): {e}"
            ) from e
        if report is not None and (raw or report.changed):
            # the checkpointer's logger, which train_net's setup shows
            self.logger.info("Checkpoint %r: %s", where, report)
        return state

    def _model_name(self) -> str:
        model = getattr(self.model, "module", self.model)  # DistributedDataParallel
        return self.meta.get("meta_architecture") or type(model).__name__

    def _check_meta(self, ckpt_meta: dict, where: str) -> None:
        for key in ("meta_architecture", "thing_classes"):
            mine, theirs = self.meta.get(key), ckpt_meta.get(key)
            if mine is None or theirs is None or mine == theirs:
                continue
            msg = f"Checkpoint {where!r} was saved with {key}={_short(theirs)}, the model has {_short(mine)}"
            if self.strict:
                raise CheckpointMismatchError(msg)
            logger.warning(msg)


def published_file_url(path: str) -> str:
    """``path``, or the URL of the file a reference's published download link points to: a
    Hugging Face file page (``https://huggingface.co/<repo>/blob/<rev>/<file>``) becomes the
    file (``.../resolve/...``) and a ``download`` query is dropped (detectron2 refuses queries
    it does not know)."""
    url = urlparse(path)
    if url.scheme not in ("http", "https"):
        return path
    if url.netloc == "huggingface.co" and "/blob/" in url.path:
        url = url._replace(path=url.path.replace("/blob/", "/resolve/", 1))
    query = [(k, v) for k, v in parse_qsl(url.query) if k != "download"]
    return url._replace(query=urlencode(query)).geturl()


RESNET_PARTS = ("stem.", "res2.", "res3.", "res4.", "res5.")


def resnet_state(state: dict) -> tuple:
    """The ResNet entries of a model's state dict, their prefix removed, and that prefix:
    those under ``backbone.bottom_up.`` (an FPN model), else under ``backbone.`` (a plain
    ResNet backbone). ``({}, None)`` if there are none."""
    for prefix in ("backbone.bottom_up.", "backbone."):
        out = {
            k[len(prefix) :]: v
            for k, v in state.items()
            if k.startswith(prefix) and k[len(prefix) :].startswith(RESNET_PARTS)
        }
        if out:
            return out, prefix
    return {}, None


def load_resnet_state(path: str) -> tuple:
    """:func:`resnet_state` of the model in the checkpoint file ``path``; a
    :class:`CheckpointMismatchError` naming the file if it cannot be read or holds no ResNet."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 -- any unreadable file gets the same message
        raise CheckpointMismatchError(f"{path}: not a readable checkpoint ({e})") from e
    model = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    state, prefix = resnet_state(model) if isinstance(model, dict) else ({}, None)
    if not state:
        raise CheckpointMismatchError(
            f"{path}: no ResNet weights (no '{{backbone.bottom_up.,backbone.}}"
            f"{{stem,res2..res5}}.*' keys)"
        )
    return state, prefix


def _short(v):
    if isinstance(v, (list, tuple)) and len(v) > 6:
        return f"[{len(v)} classes: {', '.join(map(str, v[:6]))}, ...]"
    return repr(v)
