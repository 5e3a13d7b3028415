"""The built-in demo scenario: which endpoints it attaches and with what settings.

The production stream (assets/demo/production.csv) drifts from row 1,000 on and carries
NaN rows and ground-truth labels, so failures (mismatches, non-finite outputs, low
confidence) appear by themselves as the probe walks through it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.core.store import Store

DEMO_DIR = Path(__file__).resolve().parents[2] / "assets" / "demo"
MODEL_VERSIONS = ("wine-v1", "wine-v2", "wine-v3")
PRODUCTION_MODEL = "wine-v1"
CANARY_MODEL = "wine-v2"
PRODUCTION_RATE_HZ = 50.0  # walks the 3,000-row stream, drift included, in a minute
CANARY_RATE_HZ = 10.0
REMOTE_MODEL = "wine-v2"  # served on 127.0.0.1 by app.core.demo_server: the "remote" endpoint
REMOTE_RATE_HZ = 5.0
SLO_MS = 5.0
MIN_CONFIDENCE = 0.6


class DemoError(Exception):
    """The demo's bundled files are missing; the message says how to rebuild them."""


def demo_path(name: str) -> Path:
    path = DEMO_DIR / name
    if not path.is_file():
        raise DemoError(f"demo file {path} is missing; run `python tools/build_demo_assets.py`")
    return path


def _shown(path: Path) -> str:
    # Short, readable endpoint names when run from the repository, absolute otherwise.
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def model_path(version: str) -> Path:
    return demo_path(f"{version}.onnx")


def demo_endpoints(rate_scale: float = 1.0) -> list[str]:
    stream = _shown(demo_path("production.csv"))

    def onnx(version: str, rate: float) -> str:
        return (f"onnx:{_shown(model_path(version))}?provider=cpu&payload={stream}"
                f"&rate={rate * rate_scale:g}&slo_ms={SLO_MS:g}&min_confidence={MIN_CONFIDENCE:g}")

    return [onnx(PRODUCTION_MODEL, PRODUCTION_RATE_HZ), onnx(CANARY_MODEL, CANARY_RATE_HZ),
            "system:"]


def give_references(store: Store, endpoints: Iterable[str]) -> None:
    """Drift needs a reference per model endpoint; the demo's is the training-time sample.
    Kept where one is set already (a person's choice on an earlier run)."""
    from app.core.references import demo_reference, set_reference_if_missing

    for endpoint in endpoints:
        if not endpoint.startswith("system:"):
            set_reference_if_missing(store, endpoint, demo_reference())


def remote_endpoint(base_url: str, rate_scale: float = 1.0) -> str:
    """The demo's live remote endpoint: REMOTE_MODEL over v2 at ``base_url`` (127.0.0.1)."""
    stream = _shown(demo_path("production.csv"))
    return (f"v2+{base_url}/models/{REMOTE_MODEL}?payload={stream}"
            f"&rate={REMOTE_RATE_HZ * rate_scale:g}&slo_ms={SLO_MS:g}"
            f"&min_confidence={MIN_CONFIDENCE:g}")
