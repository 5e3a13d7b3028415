"""Helpers shared by the benchmarks: timing loops and a model of a chosen cost."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def median_call_ms(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e6


def mean_call_ms(fn: Callable[[], object], n: int) -> float:
    """Wall time of n calls / n: charges batched work (a probe's settle) to the calls."""
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n / 1e6


def write_mlp(path: Path, width: int, hidden: int, layers: int = 2) -> Path:
    """A float32 MLP whose cost grows with ``hidden``: the knob for 'a model of about 1 ms'."""
    rng = np.random.default_rng(0)
    nodes, inits, prev, dim = [], [], "x", width
    for i in range(layers):
        out_dim = hidden if i < layers - 1 else 16
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((dim, out_dim)) / np.sqrt(dim)).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"]))
        if i < layers - 1:
            nodes.append(helper.make_node("Relu", [f"h{i}"], [f"r{i}"]))
            prev = f"r{i}"
        else:
            prev = f"h{i}"
        dim = out_dim
    nodes.append(helper.make_node("Softmax", [prev], ["y"], axis=-1))
    graph = helper.make_graph(
        nodes, "bench_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def write_deep_mlp(path: Path, width: int, depth: int, *, features: int | None = None,
                   classes: int | None = None) -> Path:
    """``depth`` MatMul+Relu layers sharing one ``width`` x ``width`` weight matrix, then a
    softmax; ``features``/``classes`` add a projection in/out (a classifier's small rows and
    small answers) around them.

    The shared weights stay in cache, so the cost is compute, like most real ~1 ms models;
    ``write_mlp`` with a wide hidden layer is the memory-bound case instead.
    """
    rng = np.random.default_rng(0)

    def weights(name: str, rows: int, cols: int) -> onnx.TensorProto:
        return numpy_helper.from_array(
            (rng.standard_normal((rows, cols)) / np.sqrt(rows)).astype(np.float32), name)

    inits = [weights("w", width, width)]
    nodes, prev = [], "x"
    if features is not None:
        inits.append(weights("w_in", features, width))
        nodes.append(helper.make_node("MatMul", ["x", "w_in"], ["h"]))
        prev = "h"
    for i in range(depth):
        nodes += [helper.make_node("MatMul", [prev, "w"], [f"m{i}"]),
                  helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        prev = f"r{i}"
    if classes is not None:
        inits.append(weights("w_out", width, classes))
        nodes.append(helper.make_node("MatMul", [prev, "w_out"], ["logits"]))
        prev = "logits"
    nodes.append(helper.make_node("Softmax", [prev], ["y"], axis=-1))
    graph = helper.make_graph(
        nodes, "bench_deep_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features or width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", classes or width])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path
