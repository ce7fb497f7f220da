"""Benchmarking: params, GFLOPs, latency, memory, COCO AP and training-step cost of configs."""

from .stages import record_stages, stage

__all__ = ["record_stages", "stage"]
