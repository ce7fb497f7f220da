#!/usr/bin/env python
"""CPU cost of one training step (forward + backward + optimizer step) of configs, side by side.

Every config trains on the SAME batches (drawn from its training set through the project's
mapper with a fixed seed; a note is printed when a config's data or input settings make them
differ from the first config's), from the same initialisation seed, with the training's optimizer
at its first-iteration learning rate, in one torch thread. After ``--warmup`` untimed steps,
``--steps`` steps are timed; per config one line gives the median and mean process CPU time per
step (``time.process_time``: on a shared machine it depends much less on the other users than
the wall time, which is given too) and its ratio to the first config's median. Options:

* ``--breakdown``: CPU time of the forward pass of each top-level part of the model (e.g.
  backbone, proposal_generator, roi_heads), of the whole forward and of backward + step;
  ``--breakdown roi_heads.box_head roi_heads.mask_head``: of those modules instead;
* ``--flops``: FLOPs of one step (forward + backward, counted by ``torch.utils.flop_counter``:
  matrix products and convolutions; independent of the machine's load), on the first batch;
* ``--scalar NAME``: the mean of a scalar that the model logs during training (e.g.
  ``dvis/num_candidates``).

DVIS at a realistic candidate count (extra rectangles added to its discretizer's output):
``python -m dvis_d2.diagnostics step-cost`` takes the same options and ``--extra-candidates N``.
Definitions: ``instseg_d2/benchmark/step_cost.py``. Examples (``PYTHONPATH=.``: the packages of
this checkout, when the installed ones are another checkout's):

    PYTHONPATH=. OMP_NUM_THREADS=1 python tools/step_cost.py \\
        --config-file configs/MaskRCNN/shapes_MaskRCNN_R_18.yaml \\
        --config-file configs/MaskLab/shapes_MaskLab_R_18.yaml --steps 6 --warmup 1 --breakdown
    PYTHONPATH=. OMP_NUM_THREADS=1 python tools/step_cost.py \\
        --config-file configs/MaskRCNN/shapes_MaskRCNN_R_18.yaml \\
        --config-file configs/Transfiner/shapes_Transfiner_R_18.yaml --flops \\
        --opts MODEL.TRANSFINER.NUM_LAYERS 1
"""

import argparse
from typing import List, Tuple

from instseg_d2.benchmark.step_cost import StepCost
from instseg_d2.benchmark.step_cost_cli import (
    add_step_cost_arguments,
    parse_step_cost_args,
    run_step_costs,
)


def main(argv=None) -> List[Tuple[str, StepCost]]:
    """Measure and print every config; return ``(config file, StepCost)`` in order."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_step_cost_arguments(p)
    return run_step_costs(parse_step_cost_args(p, argv))


if __name__ == "__main__":
    main()
