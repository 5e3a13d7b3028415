"""Data sources, Qt-free: one module per kind of endpoint, all behind one interface."""

from probes import agent as _agent  # noqa: F401  (registers agent+http: agent+https:)
from probes import onnx_local as _onnx_local  # noqa: F401  (registers onnx:)
from probes import prometheus as _prometheus  # noqa: F401  (registers prom+http:)
from probes import system as _system  # noqa: F401  (registers system:)
from probes import tfserving as _tfserving  # noqa: F401  (registers tfserving+http:)
from probes import torchserve as _torchserve  # noqa: F401  (registers torchserve+http:)
from probes import v2_http as _v2_http  # noqa: F401  (registers v2+http:)
from probes.base import (
    EndpointState,
    Probe,
    ProbeError,
    ProbeOptions,
    open_probe,
    register,
    schemes,
)

__all__ = [
    "EndpointState",
    "Probe",
    "ProbeError",
    "ProbeOptions",
    "open_probe",
    "register",
    "schemes",
]
