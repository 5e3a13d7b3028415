"""A small model server: one ONNX model behind the Open Inference (v2), TorchServe and TF
Serving JSON APIs, on the standard library's threading HTTP server. The demo's "live remote
endpoint" runs it in-process on 127.0.0.1 (``serve_in_thread``); tests, benchmarks and
``python tools/onnx_http_server.py --model M --port 0`` run it as a process.

Not for production: it exists so the tap, the probes and the demo can talk to a real server with
no third-party server installed. A request with an ``X-Test-Delay-S: N`` header waits N seconds
before answering (a slow server, for timeout tests). Qt-free.
Thread: one handler thread per connection, one shared onnxruntime session (thread-safe);
``serve_in_thread`` adds one accept thread.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import onnxruntime as ort

_V2_NAMES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
             np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32"}
_V2_TYPES = {v: k for k, v in _V2_NAMES.items()}


class ModelServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], model: Path) -> None:
        super().__init__(address, Handler)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(model), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.name = model.stem
        self.input = self.session.get_inputs()[0]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def predict(self, rows: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, {self.input.name: rows.astype(np.float32)})


class Handler(BaseHTTPRequestHandler):
    server: ModelServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the body waits ~40 ms for
    # the peer's delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: tests read stdout for the address only

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        # Headers and body in one write, as production servers send a small answer: two
        # writes would cost every client an extra wake-up per request.
        self._headers_buffer.append(b"\r\n" + data)
        self.flush_headers()

    def _path(self) -> str:
        delay_s = self.headers.get("X-Test-Delay-S")
        if delay_s:
            time.sleep(float(delay_s))
        return self.path.split("?", 1)[0]

    def do_GET(self) -> None:
        path, name = self._path(), self.server.name
        if path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{name}/ready"):
            self._send(200, {"live": True})
        elif path == "/ping":
            self._send(200, {"status": "Healthy"})
        elif path == f"/v2/models/{name}":
            i = self.server.input
            self._send(200, {"name": name, "versions": ["1"], "platform": "onnxruntime",
                             "inputs": [{"name": i.name, "datatype": "FP32",
                                         "shape": [-1 if not isinstance(d, int) else d
                                                   for d in i.shape]}],
                             "outputs": [{"name": o, "datatype": "FP32", "shape": [-1, -1]}
                                         for o in self.server.outputs]})
        elif path == f"/v1/models/{name}":
            self._send(200, {"model_version_status": [{"version": "1", "state": "AVAILABLE"}]})
        else:
            self._send(404, {"error": f"no route {path}"})

    def do_POST(self) -> None:
        path, name = self._path(), self.server.name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            doc = json.loads(body)
            if path == f"/v2/models/{name}/infer":
                self._v2(doc)
            elif path in (f"/predictions/{name}", f"/predictions/{name}/1"):
                rows = np.asarray(doc["data"] if isinstance(doc, dict) else doc, np.float32)
                self._send(200, self.server.predict(rows.reshape(-1, rows.shape[-1]))[0]
                           .tolist())
            elif re.fullmatch(rf"/v1/models/{re.escape(name)}(/versions/\d+)?:predict", path):
                rows = np.asarray(doc["instances"], np.float32)
                self._send(200, {"predictions": self.server.predict(rows)[0].tolist()})
            else:
                self._send(404, {"error": f"no model route {path}"})
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            self._send(400, {"error": f"bad request: {exc}"})
        except Exception as exc:  # onnxruntime rejects the input
            self._send(500, {"error": str(exc).splitlines()[0] if str(exc) else "error"})

    def _v2(self, doc: dict) -> None:
        first = doc["inputs"][0]
        rows = np.asarray(first["data"], _V2_TYPES[first["datatype"]]).reshape(first["shape"])
        outputs = self.server.predict(rows)
        body = {"model_name": self.server.name, "model_version": "1",
                "outputs": [{"name": n, "datatype": _V2_NAMES[o.dtype], "shape": list(o.shape),
                             "data": o.reshape(-1).tolist()}
                            for n, o in zip(self.server.outputs, outputs, strict=True)]}
        if "id" in doc:
            body["id"] = doc["id"]
        self._send(200, body)


class RunningServer:
    """A ModelServer answering on its own thread; ``close`` stops it and frees the port."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, name="demo-server",
                                        daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self, timeout_s: float = 5.0) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(timeout_s)
        self.server.server_close()


def serve_in_thread(model: str | Path, port: int = 0) -> RunningServer:
    """Serve ``model`` on 127.0.0.1 (an ephemeral port by default) from this process."""
    return RunningServer(ModelServer(("127.0.0.1", port), Path(model)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Serve one ONNX model over v2, TorchServe and "
                                "TF Serving JSON APIs (for tests and demos).")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (default), localhost or ::1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        # No authentication, and a test-only header that makes it sleep: loopback only.
        p.error(f"--host {args.host}: this demo server has no authentication and serves "
                "127.0.0.1 only")
    server = ModelServer((args.host, args.port), args.model)
    host, port = server.server_address[:2]
    print(f"serving http://{host}:{port} model {server.name}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


