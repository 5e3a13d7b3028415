"""A small model server for tests and benchmarks (the code lives in app.core.demo_server so the
installed app's demo can run it too):

    python tools/onnx_http_server.py --model assets/demo/wine-v1.onnx --port 0

prints ``serving http://127.0.0.1:PORT model NAME`` once it listens.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from app.core.demo_server import Handler, ModelServer, RunningServer, main, serve_in_thread

__all__ = ["Handler", "ModelServer", "RunningServer", "main", "serve_in_thread"]

if __name__ == "__main__":
    sys.exit(main())
