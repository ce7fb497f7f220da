"""The demo's library (``tools/demo.py``): predictor, drawing, COCO-style json, video.

:class:`Predictor` runs a model on one BGR image as detectron2's ``DefaultPredictor`` does
(resize to the test size, ``INPUT.FORMAT``, results at the image's size), :class:`Demo` adds the
overlay (detectron2's ``Visualizer``) and the predictions as COCO result records; both work for
every method of the project (box-only models such as FCOS give boxes, no masks).
"""

import glob
import json
import os
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
import tqdm
from detectron2.data import transforms as T
from detectron2.data.catalog import Metadata
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Instances

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class InputTransform:
    """(H, W, 3) uint8 BGR image -> the model's (3, h, w) uint8 input: ``INPUT.FORMAT``, resized
    to the test size (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``, as the test loader does)."""

    def __init__(self, cfg):
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT={self.input_format!r}: expected RGB or BGR")
        size = cfg.INPUT.MIN_SIZE_TEST
        self.resize = T.ResizeShortestEdge([size, size], cfg.INPUT.MAX_SIZE_TEST) if size else None

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) BGR image, got shape {image.shape}")
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        if self.resize is not None:
            image = self.resize.get_transform(image).apply_image(image)
        return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


class Predictor:
    """One BGR image in, the model's :class:`Instances` out (on the CPU, at the image's size),
    as detectron2's ``DefaultPredictor`` but for a model already built and loaded.

    Args:
        cfg: the model's config (see :class:`InputTransform`).
        model: in eval mode, weights loaded (see :func:`instseg_d2.engine.build_inference_model`).
    """

    def __init__(self, cfg, model: torch.nn.Module):
        self.model = model
        self.transform = InputTransform(cfg)

    def __call__(self, image: np.ndarray) -> Instances:
        """
        Args:
            image: (H, W, 3) uint8 BGR (as ``cv2.imread`` gives it).

        Returns:
            the model's ``instances`` for the image, at (H, W).
        """
        inputs = {"image": self.transform(image), "height": image.shape[0], "width": image.shape[1]}
        with torch.no_grad():
            out = self.model([inputs])[0]
        return out["instances"].to("cpu")


def instances_to_json(instances: Instances, image_id: int, classes: Sequence[str]) -> List[dict]:
    """COCO result records of one image's detections: ``image_id``, ``category_id`` (the
    class index, 0-based as in ``classes``), ``category_name``, ``bbox`` (x, y, w, h), ``score``
    and, for models with masks, ``segmentation`` (COCO RLE)."""
    records = instances_to_coco_json(instances, image_id)
    for r in records:
        r["category_name"] = classes[r["category_id"]]
    return records


class Demo:
    """A :class:`Predictor` whose detections at or above ``threshold`` are drawn and listed.

    Args:
        cfg, model: see :class:`Predictor`.
        classes: the model's class names (for labels and json).
        threshold: minimum score of a detection to keep (the model's own test thresholds still
            apply before it: a lower value here does not bring back what the model dropped).
    """

    def __init__(self, cfg, model, classes: Sequence[str], threshold: float = 0.5):
        self.predictor = Predictor(cfg, model)
        self.classes = list(classes)
        self.metadata = Metadata(name="demo", thing_classes=self.classes)
        self.threshold = threshold

    def predict(self, image: np.ndarray) -> Instances:
        """Detections of a BGR image with score >= ``threshold``."""
        instances = self.predictor(image)
        return instances[instances.scores >= self.threshold]

    def run_on_image(self, image: np.ndarray) -> Tuple[Instances, np.ndarray]:
        """(H, W, 3) BGR -> (detections, (H, W, 3) uint8 RGB overlay)."""
        from detectron2.utils.visualizer import Visualizer

        instances = self.predict(image)
        vis = Visualizer(image[:, :, ::-1], self.metadata).draw_instance_predictions(instances)
        return instances, vis.get_image()

    def process_images(self, paths: Sequence[str], output_dir: str) -> None:
        """Write the overlay and the json of every image (see :func:`output_names`), with a
        progress bar. ``image_id`` in the json is the image's index in ``paths``."""
        from detectron2.data.detection_utils import read_image
        from PIL import Image

        os.makedirs(output_dir, exist_ok=True)
        names = output_names(paths, output_dir)
        for i, (path, (overlay, json_file)) in enumerate(zip(tqdm.tqdm(paths, "demo"), names)):
            instances, vis = self.run_on_image(read_image(path, format="BGR"))
            Image.fromarray(vis).save(overlay)
            with open(json_file, "w") as f:
                json.dump(instances_to_json(instances, i, self.classes), f)

    def process_video(self, path: str, output_dir: str) -> Tuple[str, str]:
        """Write ``<output_dir>/<stem>.mp4`` (the overlaid frames) and ``<stem>.json`` (the
        records of every frame, ``image_id`` = frame index) of video ``path``; return both."""
        import cv2

        video = cv2.VideoCapture(path)
        if not os.path.isfile(path) or not video.isOpened():
            raise FileNotFoundError(f"--video-input {path!r}: no such file, or not a video")
        size = (int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        fps = video.get(cv2.CAP_PROP_FPS) or 25.0
        frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        stem = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0])
        os.makedirs(output_dir, exist_ok=True)
        writer = cv2.VideoWriter(stem + ".mp4", cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        records = []
        try:
            frames_out = tqdm.tqdm(self.run_on_video(video), "demo", total=frames)
            for i, (instances, vis) in enumerate(frames_out):
                writer.write(vis)
                records += instances_to_json(instances, i, self.classes)
        finally:
            video.release()
            writer.release()
        with open(stem + ".json", "w") as f:
            json.dump(records, f)
        return stem + ".mp4", stem + ".json"

    def run_on_video(self, video) -> Iterator[Tuple[Instances, np.ndarray]]:
        """Per frame of an opened ``cv2.VideoCapture``: (detections, BGR overlay). Colours of
        an object are kept across frames (detectron2's ``VideoVisualizer``)."""
        from detectron2.utils.video_visualizer import VideoVisualizer

        visualizer = VideoVisualizer(self.metadata)
        while True:
            ok, frame = video.read()
            if not ok:
                return
            instances = self.predict(frame)
            vis = visualizer.draw_instance_predictions(frame[:, :, ::-1], instances)
            yield instances, np.ascontiguousarray(vis.get_image()[:, :, ::-1])


def expand_inputs(items: Sequence[str]) -> List[str]:
    """Image paths from files, folders (their images, sorted) and glob patterns, in order;
    a ``FileNotFoundError`` names an item that matches no image."""
    paths = []
    for item in items:
        item = os.path.expanduser(item)
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, f)
                for f in os.listdir(item)
                if f.lower().endswith(IMAGE_EXTENSIONS)
            )
        elif os.path.isfile(item):
            found = [item]
        else:
            found = sorted(glob.glob(item))
        if not found:
            raise FileNotFoundError(f"--input {item!r}: no such file, and no image matches it")
        paths += found
    return paths


def output_names(paths: Sequence[str], output_dir: str) -> List[Tuple[str, str]]:
    """(overlay, json) output paths of each input image: ``<output_dir>/<file name>`` and
    ``<output_dir>/<file stem>.json``; a ``ValueError`` names two inputs of the same name."""
    seen = {}
    out = []
    for p in paths:
        name = os.path.basename(p)
        if name in seen:
            raise ValueError(f"--input {seen[name]!r} and {p!r} would write the same output {name}")
        seen[name] = p
        stem = os.path.splitext(name)[0]
        out.append((os.path.join(output_dir, name), os.path.join(output_dir, stem + ".json")))
    return out
