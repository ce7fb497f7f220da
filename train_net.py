#!/usr/bin/env python
"""Train and evaluate any method of this project, with detectron2's train_net command line.

    python train_net.py --config-file configs/<Method>/<cfg>.yaml [--eval-only] [--resume]
        [--num-gpus N] [--dataset NAME=annotations.json:image_dir] [KEY VALUE ...]

Every installed method package is registered and its config keys added; the class count is
taken from the training set. Before training, every image of the training and test sets is
checked (``DATASETS.IMAGE_CHECK``). At the end, a run whose loss terms did not move or whose
evaluation found no detection says so (``TEST.STALL_ITERS``); with ``TEST.STRICT_HEALTH True``
it exits with code 3. Without CUDA, or with MODEL.DEVICE cpu, it runs on the CPU
(``--num-gpus N`` then starts N CPU processes with the gloo backend).
"""

import sys

from detectron2.engine import launch
from detectron2.utils import comm

from instseg_d2.engine import (
    InstSegCheckpointer,
    Trainer,
    checkpoint_meta,
    default_argument_parser,
    setup,
)
from instseg_d2.engine.health import UNHEALTHY_EXIT_CODE, report
from instseg_d2.engine.setup import check_data
from instseg_d2.engine.summary import summarize_results


def main(args):
    cfg = setup(args)
    check_data(cfg, eval_only=args.eval_only)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = InstSegCheckpointer(
            model, cfg.OUTPUT_DIR, meta=checkpoint_meta(cfg), strict=True
        )
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results, problems = Trainer.evaluate(cfg, model)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
        problems = trainer.health_problems
    if comm.is_main_process() and results:
        print("\n" + summarize_results(results), flush=True)
    if comm.is_main_process() and problems:
        print("\n" + report(problems, strict=cfg.TEST.STRICT_HEALTH), flush=True)
        if cfg.TEST.STRICT_HEALTH:
            sys.exit(UNHEALTHY_EXIT_CODE)
    return results


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    return launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    cli()
