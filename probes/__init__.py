"""Data sources, Qt-free: one module per kind of endpoint, all behind one interface."""

from probes import agent as _agent  # noqa: F401  (registers agent+http: agent+https:)
from probes import onnx_local as _onnx_local  # noqa: F401  (registers onnx:)
from probes import system as _system  # noqa: F401  (registers system:)
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
