"""Packaging for the instance-segmentation-on-Detectron2 project.

detectron2 itself is a prerequisite installed by hand (it is not on PyPI); see README.md.
"""

from setuptools import find_packages, setup

METHOD_PACKAGES = [
    "instseg_d2",
    "condinst_d2",
    "blendmask_d2",
    "solo_d2",
    "masklab_d2",
    "semiconv_d2",
    "sparseinst_d2",
    "transfiner_d2",
    "dvis_d2",
]

setup(
    name="instseg-d2",
    version="0.1.0",
    description="Eight instance segmentation methods on one Detectron2 platform",
    python_requires=">=3.9",
    packages=find_packages(include=[p + "*" for p in METHOD_PACKAGES]),
    install_requires=[
        # torch, torchvision and detectron2 are prerequisites (README: "Prerequisites").
        "fvcore",
        "pycocotools>=2.0.2",
        "scipy",
        "numpy",
        "Pillow",
        "matplotlib",
        "tabulate",
        "shapely",  # polygon cropping (INPUT.CROP with polygon masks)
        "opencv-python-headless",  # detectron2's Visualizer, the demo's video input/output
        "tqdm",  # the demo's progress bar
    ],
    extras_require={
        "test": ["pytest>=7", "black"],
        "onnx": ["onnx", "onnxruntime"],  # tools/export.py --format onnx (and its check)
    },
)
