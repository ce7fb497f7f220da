"""Benchmarking: params, GFLOPs, latency, memory and COCO AP of several configs side by side."""

from .stages import record_stages, stage

__all__ = ["record_stages", "stage"]
