"""Benchmarking: params, GFLOPs, latency, memory, COCO AP and training-step cost of configs.

The stage timers that model code uses live in :mod:`instseg_d2.utils.profiling`; they are
re-exported here for the benchmark's callers.
"""

from ..utils.profiling import count_stage_ops, record_stages, stage

__all__ = ["count_stage_ops", "record_stages", "stage"]
