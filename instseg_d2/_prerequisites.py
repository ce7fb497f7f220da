"""Fail early, and clearly, when detectron2 (a hand-installed prerequisite) is missing."""

DETECTRON2_INSTALL_GUIDE = "https://detectron2.readthedocs.io/en/latest/tutorials/install.html"
DETECTRON2_TESTED_COMMIT = "02b5c4e (facebookresearch/detectron2, 2026-06-06)"


def check_detectron2() -> None:
    """Raise ImportError with install instructions if detectron2 cannot be imported."""
    try:
        import detectron2  # noqa: F401
        from detectron2 import _C  # noqa: F401  (compiled ops: a broken build fails here)
    except ImportError as e:
        raise ImportError(
            "instseg_d2 needs detectron2, which is not installed (or its build is broken: "
            f"{e}). detectron2 is not on PyPI: install it from source following {DETECTRON2_INSTALL_GUIDE}"
            " (e.g. `git clone https://github.com/facebookresearch/detectron2 ~/detectron2 && "
            "pip install --no-build-isolation ~/detectron2`, after torch and torchvision). "
            f"This project is tested against commit {DETECTRON2_TESTED_COMMIT} or newer."
        ) from e
