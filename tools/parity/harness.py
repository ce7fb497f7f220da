"""What the parity fixture generators of this folder share (``sparseinst.py``, ``transfiner.py``,
``dvis.py``).

A generator runs in two processes:

* the **project side** (this environment): it makes the inputs, maps the reference's parameter
  names to the project's through the project's converter and sets every parameter by
  ``instseg_d2.parity.parity_tensor`` (``parity_reference_state``), then writes the fixture;
* the **reference side**: a child python, started in a temporary folder, whose ``PYTHONPATH``
  starts with the reference clone (then ``--extra-path`` folders for the reference's own
  dependencies, then this folder). It imports the reference and nothing of the project (both
  register the same names in detectron2's registries, and the Transfiner reference is a whole
  detectron2 fork). The script is run by path (``runpy``), so that this folder is not at the
  front of ``sys.path`` and ``sparseinst.py`` here does not shadow the reference's
  ``sparseinst`` package.

The two sides exchange ``torch.save`` files in a temporary folder: the parent calls
``run_reference(stage, payload)``; the child (the same script, started with ``--child STAGE``)
dispatches to the generator's ``STAGES[stage](payload, reference)`` through :func:`main`.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from typing import Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "parity")
MAX_FIXTURE_BYTES = 1 << 20  # every fixture of the folder together stays well under 2 MB


def parse_args(description: str, default_output: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--reference", required=True, help="path of a clone of the reference")
    parser.add_argument(
        "--extra-path",
        action="append",
        default=[],
        help="folder added to the reference side's PYTHONPATH after the clone (e.g. a "
        "'pip install --target' folder holding the reference's own dependencies); repeatable",
    )
    parser.add_argument(
        "--output",
        default=os.path.join(FIXTURES, default_output),
        help="fixture file to write (default: tests/fixtures/parity/%(default)s)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--io", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.reference = os.path.abspath(args.reference)
    if not os.path.isdir(args.reference):
        parser.error(f"--reference {args.reference!r} is not a folder")
    return args


def reference_commit(clone: str) -> str:
    """The commit the clone is at (``git rev-parse HEAD``)."""
    out = subprocess.run(
        ["git", "-C", clone, "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"--reference {clone!r}: not a git clone ({out.stderr.strip()})")
    return out.stdout.strip()


class Reference:
    """The reference side of one generator run: ``ref(stage, payload) -> result``."""

    def __init__(self, script: str, args: argparse.Namespace):
        self.script = os.path.abspath(script)
        self.args = args
        self.commit = reference_commit(args.reference)

    def __call__(self, stage: str, payload: dict) -> dict:
        import torch

        paths = [self.args.reference] + [os.path.abspath(p) for p in self.args.extra_path]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths + [HERE]), OMP_NUM_THREADS="1")
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(payload, os.path.join(tmp, "in.pt"))
            # run the script by path from the temporary folder: neither this folder nor the
            # repository is then at the front of sys.path (``python script.py`` would put this
            # folder there, and sparseinst.py here would shadow the reference's package)
            run = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], "
            run += "run_name='__main__')"
            cmd = [sys.executable, "-c", run, self.script, "--reference", self.args.reference]
            cmd += ["--child", stage, "--io", tmp]
            done = subprocess.run(cmd, env=env, cwd=tmp, check=False)
            if done.returncode != 0:
                raise SystemExit(f"reference side, stage {stage!r}: exit code {done.returncode}")
            return torch.load(os.path.join(tmp, "out.pt"), weights_only=False)


def main(
    script: str,
    doc: str,
    default_output: str,
    generate: Callable[["Reference", argparse.Namespace], dict],
    stages: Dict[str, Callable[[dict, str], dict]],
    argv: Optional[List[str]] = None,
) -> None:
    """Entry point of a generator (``script``, whose docstring ``doc`` starts with its
    description): the parent calls ``generate(ref, args)`` and saves the fixture it returns;
    the child runs one of ``stages``."""
    import torch

    args = parse_args(doc.split("\n\n")[0], default_output, argv)
    if args.child is not None:
        payload = torch.load(os.path.join(args.io, "in.pt"), weights_only=False)
        result = stages[args.child](payload, args.reference)
        torch.save(result, os.path.join(args.io, "out.pt"))
        return
    fixture = generate(Reference(script, args), args)
    save_fixture(args.output, fixture)


def save_fixture(path: str, fixture: dict) -> None:
    import torch

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(fixture, path)
    size = os.path.getsize(path)
    print(f"wrote {path} ({size / 1024:.1f} KiB)")
    if size > MAX_FIXTURE_BYTES:
        raise SystemExit(f"{path}: {size} bytes, over the {MAX_FIXTURE_BYTES} allowed per fixture")


def capture_locals(call: Callable[[], object], *functions):
    """Run ``call()``; return its result and, for each of ``functions``, the locals of each of
    its calls (a list of dicts), read when that call returns (``sys.setprofile``), so that a
    reference's intermediate values (e.g. selected quadtree nodes held in local variables) can
    be recorded without editing its code."""
    codes = [f.__code__ for f in functions]
    seen = [[] for _ in functions]

    def profiler(frame, event, arg):
        if event == "return" and frame.f_code in codes:
            seen[codes.index(frame.f_code)].append(dict(frame.f_locals))

    old = sys.getprofile()
    sys.setprofile(profiler)
    try:
        result = call()
    finally:
        sys.setprofile(old)
    return result, seen


def state_template(module) -> dict:
    """``{name: (shape, dtype name)}`` of a module's state dict: what a fixture records of the
    reference's parameters (no values)."""
    return {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in
            module.state_dict().items()}  # fmt: skip


def pack_bits(mask) -> dict:
    """A bool tensor stored 8 pixels a byte: ``{"bits": uint8 (ceil(numel / 8),), "shape"}``
    (``numpy.packbits`` of the flattened mask); the tests unpack it with ``numpy.unpackbits``."""
    import numpy as np
    import torch

    return {
        "bits": torch.from_numpy(np.packbits(mask.reshape(-1).numpy().astype(bool))),
        "shape": tuple(mask.shape),
    }
