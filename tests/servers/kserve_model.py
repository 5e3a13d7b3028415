"""Run by KServe's own Python (not ours): serves one ONNX model through KServe's ModelServer
on the Open Inference Protocol (v2) REST API, as a custom ``kserve.Model``.

    python kserve_model.py MODEL.onnx NAME VERSION PORT

KServe's REST server binds 0.0.0.0 unconditionally; the tests want 127.0.0.1 only, so uvicorn's
Config is given that host before KServe builds its server.
"""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

_config_init = uvicorn.Config.__init__


def _loopback_config(self, *args, **kwargs):
    kwargs["host"] = "127.0.0.1"
    _config_init(self, *args, **kwargs)


uvicorn.Config.__init__ = _loopback_config


class OnnxModel(Model):
    def __init__(self, path: str, name: str, version: str) -> None:
        super().__init__(name)
        self.path = path
        self.version = version
        self.session: ort.InferenceSession | None = None
        self.load()

    def load(self) -> bool:
        self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        feeds = {i.name: i.as_numpy().astype(np.float32) for i in payload.inputs}
        names = [o.name for o in self.session.get_outputs()]
        outputs = []
        for name, array in zip(names, self.session.run(names, feeds), strict=True):
            out = InferOutput(name=name, shape=list(array.shape), datatype="FP32")
            out.set_data_from_numpy(array.astype(np.float32), binary_data=False)
            outputs.append(out)
        return InferResponse(response_id=payload.id or "", model_name=self.name,
                             model_version=self.version, infer_outputs=outputs)


if __name__ == "__main__":
    path, name, version, port = sys.argv[1:5]
    ModelServer(http_port=int(port), enable_grpc=False).start([OnnxModel(path, name, version)])
