"""Benchmarking: params, GFLOPs, latency, memory, COCO AP and training-step cost of configs."""

from .stages import count_stage_ops, record_stages, stage

__all__ = ["count_stage_ops", "record_stages", "stage"]
