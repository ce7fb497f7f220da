"""Packaging for the instance-segmentation-on-Detectron2 project.

detectron2 itself is a prerequisite installed by hand (it is not on PyPI); see README.md.
"""

from setuptools import find_packages, setup

# Every method package and its add_<method>_config(cfg): installed, and registered under the
# entry-point group that instseg_d2.plugins loads (the one list of method packages).
METHOD_PACKAGES = {
    "condinst_d2": "add_condinst_config",
    "blendmask_d2": "add_blendmask_config",
    "solo_d2": "add_solo_config",
    "masklab_d2": "add_masklab_config",
    "semiconv_d2": "add_semiconv_config",
    "sparseinst_d2": "add_sparseinst_config",
    "transfiner_d2": "add_transfiner_config",
    "dvis_d2": "add_dvis_config",
}

setup(
    name="instseg-d2",
    version="0.1.0",
    description="Eight instance segmentation methods on one Detectron2 platform",
    python_requires=">=3.9",
    packages=find_packages(include=["instseg_d2*"] + [p + "*" for p in METHOD_PACKAGES]),
    entry_points={
        "instseg_d2.methods": [f"{p[:-3]} = {p}:{fn}" for p, fn in METHOD_PACKAGES.items()]
    },
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
