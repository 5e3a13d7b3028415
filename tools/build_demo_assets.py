"""Builds assets/demo/ from scikit-learn's bundled wine data: three model versions, data files.

Run ``python tools/build_demo_assets.py``; the outputs are committed, so nobody needs to run
it to use the demo. Nothing is downloaded: the wine data ships inside scikit-learn.

- ``wine-v1.onnx``: a small MLP, the version in production when the demo starts.
- ``wine-v2.onnx``: a wider MLP trained longer; fixes some of v1's mistakes.
- ``wine-v3.onnx``: same architecture as v2, but its training pipeline lost most class-2
  rows (a real regression on one class: cultivar 2 is misclassified far more often).
- ``reference.csv``: 1,000 rows like the training data, with labels.
- ``validation.csv``: 300 held-out rows with labels, for the handover contracts.
- ``production.csv``: 3,000 rows in time order; drift in ``alcohol`` and ``color_intensity``
  from row 1,000 on, more class-2 traffic in the last third, and 1% rows with a NaN feature.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

OUT = Path(__file__).resolve().parent.parent / "assets" / "demo"
SEED = 7


def synthesize(x: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator,
               class_weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw rows from per-class Gaussians fitted to the real data (shrunk covariance)."""
    classes = np.unique(y)
    p = class_weights if class_weights is not None else np.bincount(y) / len(y)
    labels = rng.choice(classes, size=n, p=p)
    rows = np.empty((n, x.shape[1]))
    for c in classes:
        xc = x[y == c]
        cov = 0.8 * np.cov(xc, rowvar=False) + 0.2 * np.diag(np.var(xc, axis=0))
        idx = labels == c
        rows[idx] = rng.multivariate_normal(xc.mean(0), cov, size=idx.sum())
    return np.clip(rows, 0.0, None), labels


def to_onnx(model: MLPClassifier, mean: np.ndarray, std: np.ndarray, version: str,
            description: str) -> onnx.ModelProto:
    n_features = len(mean)
    inits = [numpy_helper.from_array(mean.astype(np.float32), "mean"),
             numpy_helper.from_array(std.astype(np.float32), "std")]
    nodes = [helper.make_node("Sub", ["features", "mean"], ["centred"]),
             helper.make_node("Div", ["centred", "std"], ["h0"])]
    last = len(model.coefs_) - 1
    for i, (w, b) in enumerate(zip(model.coefs_, model.intercepts_, strict=True)):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [f"h{i}", f"W{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        nodes.append(helper.make_node("Softmax", [f"a{i}"], ["probabilities"], axis=-1)
                     if i == last else helper.make_node("Relu", [f"a{i}"], [f"h{i + 1}"]))
    graph = helper.make_graph(
        nodes, "wine_classifier",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        inits,
    )
    m = helper.make_model(graph, producer_name="probescope-demo", producer_version="1",
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    m.doc_string = description
    helper.set_model_props(m, {"version": version, "classes": "0,1,2"})
    onnx.checker.check_model(m)
    return m


def main() -> None:
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    rng = np.random.default_rng(SEED)
    wine = load_wine()
    x, y = wine.data, wine.target
    names = [n.replace("/", "_").replace("od280_od315_of_diluted_wines", "od280_od315")
             for n in wine.feature_names]
    OUT.mkdir(parents=True, exist_ok=True)

    train_x, train_y = synthesize(x, y, 4000, rng)
    mean, std = train_x.mean(0), train_x.std(0)
    z = (train_x - mean) / std

    # Noise on the inputs the models learn from keeps them from being perfect, so the demo has
    # honest mistakes to replay.
    noisy = z + rng.normal(0, 0.9, z.shape)
    v1 = MLPClassifier((8,), max_iter=60, random_state=1).fit(noisy[:1200], train_y[:1200])
    v2 = MLPClassifier((32,), max_iter=400, random_state=2).fit(noisy, train_y)
    keep = (train_y != 2) | (rng.random(len(train_y)) < 0.01)
    v3 = MLPClassifier((32,), max_iter=400, random_state=2).fit(noisy[keep], train_y[keep])

    val_x, val_y = synthesize(x, y, 300, rng)
    ref_x, ref_y = synthesize(x, y, 1000, rng)

    n = 3000
    prod_x, prod_y = synthesize(x, y, n, rng)
    late_x, late_y = synthesize(x, y, n // 3, rng, class_weights=np.array([0.2, 0.3, 0.5]))
    prod_x[2 * n // 3:], prod_y[2 * n // 3:] = late_x, late_y
    drift = np.clip((np.arange(n) - n / 3) / (n / 3), 0.0, 1.0)  # ramps 0 -> 1 over rows 1k-2k
    alcohol, color = names.index("alcohol"), names.index("color_intensity")
    prod_x[:, alcohol] += drift * 1.2 * std[alcohol]
    prod_x[:, color] *= 1.0 + 0.5 * drift
    nan_rows = rng.choice(np.arange(200, n), size=n // 100, replace=False)
    prod_x[nan_rows, rng.integers(0, len(names), size=len(nan_rows))] = np.nan

    def frame(data: np.ndarray, labels: np.ndarray, prefix: str) -> pd.DataFrame:
        f = pd.DataFrame(np.round(data, 4), columns=names)
        f.insert(0, "id", [f"{prefix}-{i:05d}" for i in range(len(f))])
        f["label"] = labels
        return f

    frame(ref_x, ref_y, "ref").to_csv(OUT / "reference.csv", index=False)
    frame(val_x, val_y, "val").to_csv(OUT / "validation.csv", index=False)
    frame(prod_x, prod_y, "req").to_csv(OUT / "production.csv", index=False)

    report = {}
    for name, model, desc in [
        ("wine-v1", v1, "v1: 8 hidden units, short training"),
        ("wine-v2", v2, "v2: 32 hidden units, full training"),
        ("wine-v3", v3, "v3: as v2, but its training data lost most class-2 rows"),
    ]:
        version = name.split("-")[1].lstrip("v") + ".0.0"
        onnx.save(to_onnx(model, mean, std, version, desc), OUT / f"{name}.onnx")
        pred = model.predict((val_x - mean) / std)
        per_class = {int(c): round(float((pred[val_y == c] == c).mean()), 3) for c in range(3)}
        ok = ~np.isnan(prod_x).any(1)
        prod_pred = model.predict((prod_x[ok] - mean) / std)
        report[name] = {"accuracy": round(float((pred == val_y).mean()), 3),
                        "recall_per_class": per_class,
                        "production_accuracy": round(float((prod_pred == prod_y[ok]).mean()), 3)}
    (OUT / "models.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
