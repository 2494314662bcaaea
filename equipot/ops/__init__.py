"""Scatter/segment reductions and the fused R3×S2 message, with per-device backends.

See :mod:`equipot.ops.backends` for how a backend is chosen or forced.
"""
from .backends import (
    BACKENDS,
    available_backends,
    backend_available,
    default_backend,
    resolve_backend,
    use_backend,
)
from .message import EdgePlan, edge_plan, spatial_message
from .scatter import scatter_sum, segment_sum

__all__ = [
    "BACKENDS",
    "EdgePlan",
    "available_backends",
    "backend_available",
    "default_backend",
    "edge_plan",
    "resolve_backend",
    "scatter_sum",
    "segment_sum",
    "spatial_message",
    "use_backend",
]
