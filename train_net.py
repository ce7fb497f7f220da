#!/usr/bin/env python
"""Train and evaluate any method of this project, with detectron2's train_net command line.

    python train_net.py --config-file configs/<Method>/<cfg>.yaml [--eval-only] [--resume]
        [--num-gpus N] [--dataset NAME=annotations.json:image_dir] [KEY VALUE ...]

Every installed method package is registered and its config keys added; the class count is
taken from the training set. Without CUDA, or with MODEL.DEVICE cpu, it runs on the CPU
(``--num-gpus N`` then starts N CPU processes with the gloo backend).
"""

from detectron2.engine import launch
from detectron2.utils import comm

from instseg_d2.engine import (
    InstSegCheckpointer,
    Trainer,
    checkpoint_meta,
    default_argument_parser,
    setup,
)
from instseg_d2.engine.summary import summarize_results


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = InstSegCheckpointer(
            model, cfg.OUTPUT_DIR, meta=checkpoint_meta(cfg), strict=True
        )
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
    if comm.is_main_process() and results:
        print("\n" + summarize_results(results), flush=True)
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
