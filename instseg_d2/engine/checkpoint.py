"""The one checkpoint format: detectron2's, plus a small record of what model it holds."""

import logging
import os
from typing import Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer

logger = logging.getLogger(__name__)

META_KEY = "instseg_meta"


class CheckpointMismatchError(RuntimeError):
    """MODEL.WEIGHTS does not fit the model (wrong model, wrong classes); says what and where."""


class InstSegCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` (local paths, URLs, ``detectron2://``) with checks.

    * Every saved file records ``instseg_meta``: the meta-architecture and the classes.
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
            return super().load(path, *args, **kwargs)
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
        n_ckpt = len(checkpoint.get("model", {}))
        incompatible = super()._load_model(checkpoint)
        model_keys = set(self.model.state_dict().keys())
        bad_shape = {k for k, *_ in incompatible.incorrect_shapes}
        loaded = model_keys - set(incompatible.missing_keys) - bad_shape
        if n_ckpt and not loaded:
            raise CheckpointMismatchError(
                f"Checkpoint {where!r} shares no parameter with the model "
                f"({self.meta.get('meta_architecture', type(self.model).__name__)}); is it a "
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

    def _check_meta(self, ckpt_meta: dict, where: str) -> None:
        for key in ("meta_architecture", "thing_classes"):
            mine, theirs = self.meta.get(key), ckpt_meta.get(key)
            if mine is None or theirs is None or mine == theirs:
                continue
            msg = f"Checkpoint {where!r} was saved with {key}={_short(theirs)}, the model has {_short(mine)}"
            if self.strict:
                raise CheckpointMismatchError(msg)
            logger.warning(msg)


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
