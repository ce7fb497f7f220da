"""Benchmarking: params, GFLOPs, latency, memory and COCO AP of several configs side by side."""

from .stages import count_stage_ops, record_stages, stage

__all__ = ["count_stage_ops", "record_stages", "stage"]
