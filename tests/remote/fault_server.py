"""A tiny HTTP server of our own for fault injection: slow, garbage, oversized, cut-off and
failing answers. It speaks just enough of the v2, TorchServe, TF Serving and Prometheus
formats to reach those faults; the real peers (MLServer) are tested in their own files.
Thread: serves on its own daemon threads; the test controls it through attributes.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SCORES = [0.1, 0.7, 0.2]
V2_METADATA = {"name": "m", "versions": ["7"], "platform": "test",
               "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 13]}],
               "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]}
TF_METADATA = {"model_spec": {"name": "m", "version": "3"}, "metadata": {"signature_def": {
    "signature_def": {"serving_default": {"inputs": {"x": {
        "dtype": "DT_FLOAT", "name": "serving_default_x:0",
        "tensor_shape": {"dim": [{"size": "-1"}, {"size": "13"}]}}},
        "method_name": "tensorflow/serving/predict"}}}}}


class FaultServer:
    """``mode``: ok, slow (``delay_s``; hang: every call), garbage, huge, huge_stream, cut,
    error500, echo_auth (a 500 whose error text repeats the request's Authorization header)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.token: str | None = None  # set: every call needs "Bearer <token>", else HTTP 401
        self.model_ready = True
        self.delay_s = 5.0
        self.huge_bytes = 3 * 2**20
        self.metrics_text = "# TYPE demo_total counter\ndemo_total 1\n"
        self.bodies: list[bytes] = []
        self.authorizations: list[str | None] = []
        self.release = threading.Event()  # ends every slow answer at once (test teardown)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()  # kept-alive connections, cut on stop
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output quiet
                return None

            def setup(self) -> None:
                super().setup()
                owner._open.add(self.connection)

            def finish(self) -> None:
                owner._open.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                owner._answer(self, "GET")

            def do_POST(self) -> None:
                owner._answer(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop as a killed server would: the listener and every open connection go."""
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for conn in list(self._open):
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)
        self.release = threading.Event()

    # -- answers ---------------------------------------------------------------------------

    def _answer(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("content-length") or 0)
        body = h.rfile.read(length) if length else b""
        if method == "POST":
            self.bodies.append(body)
            self.authorizations.append(h.headers.get("authorization"))
        path = h.path
        if self.token is not None and h.headers.get("authorization") != f"Bearer {self.token}":
            return self._send(h, 401, b'{"error": "invalid bearer token"}')
        data_call = method == "POST" or path == "/metrics" or self.mode == "hang"
        if data_call and self.mode in ("slow", "hang"):
            self.release.wait(self.delay_s)
        if data_call and self.mode == "garbage":
            return self._send(h, 200, b"<html><body>502 upstream hiccup</body></html>",
                              "text/html")
        if data_call and self.mode == "huge":
            return self._send(h, 200, b'{"outputs": [' + b" " * self.huge_bytes + b"]}")
        if data_call and self.mode == "huge_stream":  # no length declared: only reading tells
            h.send_response(200)
            h.send_header("content-type", "application/json")
            h.send_header("connection", "close")
            h.end_headers()
            chunk = b" " * 65536
            for _ in range(self.huge_bytes // len(chunk)):
                try:
                    h.wfile.write(chunk)
                except OSError:
                    break  # the client hung up once it had read past its cap
            h.close_connection = True
            return None
        if data_call and self.mode == "cut":
            h.send_response(200)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", "5000")
            h.end_headers()
            h.wfile.write(b'{"outputs": [{"na')
            h.wfile.flush()
            h.close_connection = True
            return None
        if data_call and self.mode == "error500":
            return self._json(h, 500, {"error": "model crashed: CUDA out of memory"})
        if data_call and self.mode == "echo_auth":
            return self._json(h, 500, {"error": "rejected request with Authorization: "
                                                f"{h.headers.get('authorization')}"})
        return self._route(h, method, path, body)

    def _route(self, h: BaseHTTPRequestHandler, method: str, path: str, body: bytes) -> None:
        if path.endswith("/ready") and path.startswith("/v2/models") and not self.model_ready:
            return self._json(h, 400, {"error": "model m is still loading"})
        if path in ("/v2/health/live", "/v2/health/ready", "/v2/models/m/ready",
                    "/v2/models/m/versions/7/ready"):
            return self._json(h, 200, {})
        if path in ("/v2/models/m", "/v2/models/m/versions/7"):
            return self._json(h, 200, V2_METADATA)
        if method == "POST" and path.startswith("/v2/models/m") and path.endswith("/infer"):
            return self._json(h, 200, {"model_name": "m", "model_version": "7", "outputs": [
                {"name": "probabilities", "shape": [1, 3], "datatype": "FP32",
                 "data": SCORES}]})
        if path == "/ping":
            return self._json(h, 200, {"status": "Healthy"})
        if method == "POST" and path == "/predictions/m":
            return self._json(h, 200, {"class_a": 0.1, "class_b": 0.7, "class_c": 0.2})
        if path == "/v1/models/m":
            return self._json(h, 200, {"model_version_status": [
                {"version": "3", "state": "AVAILABLE",
                 "status": {"error_code": "OK", "error_message": ""}}]})
        if path == "/v1/models/m/metadata":
            return self._json(h, 200, TF_METADATA)
        if method == "POST" and path == "/v1/models/m:predict":
            return self._json(h, 200, {"predictions": [SCORES]})
        if path == "/metrics":
            return self._send(h, 200, self.metrics_text.encode(), "text/plain; version=0.0.4")
        return self._json(h, 404, {"error": f"no route {method} {path}"})

    @staticmethod
    def _json(h: BaseHTTPRequestHandler, status: int, doc: object) -> None:
        FaultServer._send(h, status, json.dumps(doc).encode())

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: bytes,
              content_type: str = "application/json") -> None:
        try:
            h.send_response(status)
            h.send_header("content-type", content_type)
            h.send_header("content-length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the probe gave up on a slow answer, as the timeout tests intend
