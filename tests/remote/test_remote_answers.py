"""How the remote probes read answers: v2 tensors, free-form TorchServe JSON, TF Serving
predictions, and PromQL-style histogram quantiles. Pure functions, no server needed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from probes.http_common import BadResponse
from probes.http_model import predict
from probes.prom_series import histogram_quantile, window_buckets
from probes.torchserve import decode_json_answer
from probes.v2_http import tensor_from_json


def test_v2_tensors_keep_their_datatype_and_shape():
    name, array = tensor_from_json({"name": "p", "datatype": "FP32", "shape": [2, 2],
                                    "data": [1, 2, 3, 4]})
    assert name == "p" and array.dtype == np.float32 and array.shape == (2, 2)
    _, nested = tensor_from_json({"name": "n", "datatype": "INT64", "shape": [1, 2],
                                  "data": [[7, 8]]})  # some servers nest; same tensor
    assert nested.tolist() == [[7, 8]]
    _, text = tensor_from_json({"name": "t", "datatype": "BYTES", "shape": [1],
                                "data": ["cat"]})
    assert predict({"t": text}) == ("cat", None)


@pytest.mark.parametrize(("doc", "words"), [
    ({"name": "p", "datatype": "FP32", "shape": [3], "data": [1, 2]}, r"declares shape \[3\]"),
    ({"name": "p", "datatype": "COMPLEX", "shape": [1], "data": [1]}, "unknown datatype"),
    ({"name": "p", "datatype": "INT8", "shape": [1], "data": ["x"]}, "not INT8"),
    ({"shape": [1]}, "not a tensor"),
])
def test_v2_tensors_that_do_not_add_up_are_bad_responses(doc, words):
    with pytest.raises(BadResponse, match=words):
        tensor_from_json(doc)


def test_predict_reads_scores_logits_and_class_ids():
    assert predict({"p": np.array([[0.2, 0.8]])}) == ("1", pytest.approx(0.8))
    assert predict({"p": np.array([[2.0, -1.0, 0.5]])}) == ("0", None)  # logits
    assert predict({"p": np.array([[2]], dtype=np.int64)}) == ("2", None)
    assert predict({"p": np.array([[2.0]])}) == ("2", None)  # a class id sent as a float
    assert predict({}) == (None, None)


@pytest.mark.parametrize(("answer", "prediction", "confidence"), [
    ({"cat": 0.9, "dog": 0.1}, "cat", 0.9),
    ([{"cat": 0.2, "dog": 0.8}], "dog", 0.8),  # a batch of one
    ({"predictions": [[0.1, 0.9]]}, None, None),  # scores: the class comes from predict()
    ("tabby", "tabby", None),
    (["tabby"], "tabby", None),
    ({"logit_a": 3.0, "logit_b": -2.0}, "logit_a", None),  # not probabilities: no confidence
])
def test_torchserve_answers_in_their_usual_shapes(answer, prediction, confidence):
    decoded = decode_json_answer(answer)
    assert decoded.prediction == prediction
    assert decoded.confidence == (pytest.approx(confidence) if confidence else None)


def test_torchserve_answers_that_are_not_predictions_are_bad_responses():
    for answer in (None, {"message": "hello"}, [["a", 1], {"b": 2}]):
        with pytest.raises(BadResponse):
            decode_json_answer(answer)


def test_histogram_quantiles_interpolate_like_promql():
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, math.inf: 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.75)
    assert histogram_quantile(0.99, {1.0: 10.0, math.inf: 20.0}) == 1.0  # in +Inf: last bound
    assert histogram_quantile(0.5, {1.0: 0.0, math.inf: 0.0}) is None
    assert histogram_quantile(0.5, {1.0: 3.0}) is None  # no +Inf bucket: not a histogram


def test_window_buckets_survive_a_server_restart():
    old = {1.0: 100.0, math.inf: 120.0}
    assert window_buckets({1.0: 130.0, math.inf: 150.0}, old) == {1.0: 30.0, math.inf: 30.0}
    assert window_buckets({1.0: 5.0, math.inf: 6.0}, old) == {1.0: 5.0, math.inf: 6.0}
