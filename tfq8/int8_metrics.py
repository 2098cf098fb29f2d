"""int8 metrics: evaluate an int8 TFLite model on validation data, Keras-metrics style.

Given a Keras (3 or tf_keras) model and an int8 `.tflite` converted from it,
`evaluate_int8` runs the int8 model in LiteRT (through
`tfq8.harness.interpreter.ModelRunner`, which quantizes the float inputs and
dequantizes the outputs) and the Keras model on the same validation samples,
and returns the int8 top-1 accuracy, the float-vs-int8 top-1 agreement and the
int8 versions of the model's compiled loss and metrics, under the log keys
`CalibrationCallback` writes (`val_int8_accuracy`, `val_int8_agreement`,
`val_int8_loss`, `val_int8_<metric>`; multi-output models also get
`val_int8_<output>_...`). `ValidationSet` reads validation data of the kinds
`model.fit` accepts once, so it can be reused for every evaluation.

Example:
    >>> from tfq8 import int8_metrics
    >>> from tfq8.models import load_model
    >>> val = int8_metrics.ValidationSet.build((x_val, y_val), model,
    ...                                        load_model(model).specs)
    >>> int8_metrics.evaluate_int8(tfq8.convert(model, x_train[:256]), model, val)
    {'val_int8_accuracy': 0.97..., 'val_int8_agreement': 0.99..., 'val_int8_loss': 0.08...}
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from typing import Any, Sequence

import numpy as np

from tfq8 import _tflite
from tfq8.data import (EmptyRun, RepresentativeDataset, StreamBudget, _is_pydataset,
                       _is_tensor, pydataset_batches, representative_dataset)
from tfq8.errors import first_line
from tfq8.harness.check import top1
from tfq8.harness.interpreter import ModelRunner
from tfq8.models import is_tf_keras_model, keras_module

# The callback's logger: these messages explain int8 keys missing from its logs.
_log = logging.getLogger("tfq8.callbacks")

__all__ = ["INT8_KEYS", "ValidationSet", "check_steps", "evaluate_int8", "readable"]

#: Keys `evaluate_int8` writes for single-output models (multi-output models
#: also get `val_int8_<output>_accuracy` / `_agreement` / `_loss`).
INT8_KEYS = ("val_int8_accuracy", "val_int8_agreement", "val_int8_loss")


def evaluate_int8(blob: bytes, model: Any, val: "ValidationSet", *,
                  batch_size: int | None = None,
                  num_threads: int | None = None,
                  skipped: dict[str, str] | None = None) -> dict[str, float]:
    """int8 accuracy, float-vs-int8 agreement, loss and compiled metrics on `val`.

    Args:
        blob: The int8 `.tflite` converted from `model`.
        model: The Keras model (its current weights give the float predictions;
            its compile config gives the loss and metrics).
        val: The validation set, built for `model`.
        batch_size: Samples per LiteRT / Keras run (default: `ModelRunner`'s,
            sized to a memory budget).
        num_threads: LiteRT kernel threads (default: one per CPU).
        skipped: If given, filled with compiled loss or metric name -> why it has
            no int8 value (it could not be computed on the int8 outputs).

    Returns:
        Log key -> value. Accuracy needs labels; loss and metrics need labels
        and a compiled model; values that cannot be computed are left out.

    Example:
        >>> evaluate_int8(blob, model, val, batch_size=128)["val_int8_agreement"]
        0.99...
    """
    names = output_names(model)
    int8, batch = run_int8(blob, val.rep, names, batch_size, num_threads=num_threads)
    floats = _predict_float(model, val.rep, names, batch)  # Keras runs the same batches
    return _int8_metrics(model, names, floats, int8, val.y, val.weights, skipped)


# ------------------------------------------------------------------ model
def _keras_input_names(model: Any) -> list[str]:
    inputs = getattr(model, "inputs", None) or []
    names = getattr(model, "input_names", None)
    if names:
        return [str(n) for n in names]
    return [str(getattr(t, "name", f"input_{i}")).split(":")[0] for i, t in enumerate(inputs)]


def keras_order_to_dict(model: Any, x: Any, specs: Sequence[Any]) -> Any:
    """A list of arrays in Keras input order -> a dict by input name.

    tfq8's adapter reads lists in the TFLite graph's input order, which can differ
    from the Keras order that `model.fit` uses; naming the arrays avoids the mix-up.
    """
    if isinstance(x, list) and len(specs) > 1 and len(x) == len(specs):
        names = _keras_input_names(model)
        if len(names) == len(x) and sorted(names) == sorted(s.name for s in specs):
            return dict(zip(names, x))
    return x


def output_names(model: Any) -> list[str]:
    """The Keras model's output names (`output_<i>` when it has none)."""
    names = getattr(model, "output_names", None)
    if names:
        return [str(n) for n in names]
    outputs = getattr(model, "outputs", None) or [None]
    return [f"output_{i}" for i in range(len(outputs))]


# ------------------------------------------------------- validation data
def readable(data: Any) -> bool:
    """Whether `data` is of a kind `ValidationSet.build` can read (a file name is not)."""
    if isinstance(data, (str, bytes, os.PathLike)):
        return False
    if isinstance(data, (tuple, list, dict, np.ndarray)):
        return True
    try:
        import tensorflow as tf  # noqa: PLC0415

        if isinstance(data, tf.data.Dataset) or tf.is_tensor(data):
            return True
    except ImportError:  # pragma: no cover
        pass
    return hasattr(data, "__iter__") or hasattr(data, "__getitem__")


def check_steps(data: Any, steps: int | None) -> None:
    """Refuses `steps` (the callback's `validation_steps`) for validation data given as arrays.

    Raises:
        ValueError: Naming validation_steps and the kind of validation_data received.
    """
    if steps is not None and (isinstance(data, (tuple, list, np.ndarray, dict)) or _is_tensor(data)):
        raise ValueError(
            "validation_steps counts the batches read from validation_data given as batches "
            "(a generator, an iterator, a tf.data.Dataset or a PyDataset); validation_data "
            "given as arrays has none: slice the arrays instead. Received: "
            f"validation_steps={steps!r} with validation_data of type {type(data).__name__}")


def _np(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _np(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_np(v) for v in x]
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


@dataclasses.dataclass
class ValidationSet:
    """Validation inputs (adapted, in TFLite input order), labels and weights.

    Attributes:
        rep: The inputs.
        y: Keras output name -> labels, or None without labels.
        weights: One weight per sample (per-sample means of `sample_weight`), or None.
    """

    rep: RepresentativeDataset
    y: dict[str, np.ndarray] | None
    weights: np.ndarray | None

    @classmethod
    def build(cls, data: Any, model: Any, specs: Sequence[Any], *,
              steps: int | None = None) -> "ValidationSet":
        """Reads `data` for `model` whose (TFLite-order) input specs are `specs`.

        Args:
            data: `(x, y)`, `(x, y, sample_weight)`, inputs `x` alone, or a
                `tf.data.Dataset`, `keras.utils.PyDataset` or iterable of such batches.
            model: The Keras model (its input and output names).
            specs: Its input specs (`tfq8.models.load_model(model).specs`).
            steps: Read at most this many batches of a stream (as `model.fit`'s
                `validation_steps`); needed for an endless one. Without it a stream
                with no known end is refused past `tfq8.data.UNSIZED_MAX_BYTES` of
                samples.

        Raises:
            ValueError: On labels that do not fit the inputs or the outputs (class
                indices outside a classifier's classes, for one), an empty or
                infinite stream, or `steps` with arrays.
        """
        outputs = output_names(model)
        if isinstance(data, list):
            data = tuple(data)  # as model.fit reads validation_data
        if isinstance(data, tuple) and not 1 <= len(data) <= 3:
            raise ValueError("validation_data must be x, (x,), (x, y) or (x, y, sample_weight), "
                             f"as model.fit takes it. Received: a sequence of {len(data)} items")
        check_steps(data, steps)
        if isinstance(data, tuple):
            x, y, w = (list(data) + [None, None])[:3]
        elif isinstance(data, (np.ndarray, dict)) or _is_tensor(data):
            x, y, w = data, None, None
        else:
            x, y, w = _collect_stream(data, model, specs, steps)
        rep = representative_dataset(keras_order_to_dict(model, _np(x), specs), specs=specs)
        n = len(rep)
        labels = None if y is None else _by_output(_np(y), outputs)
        if labels is not None:
            for name, arr in labels.items():
                if len(arr) != n:
                    raise ValueError(
                        f"validation_data labels for output {name!r} have {len(arr)} samples; the "
                        f"inputs have {n}. Received: labels of shape {arr.shape}")
            units = _output_units(model, rep, outputs)
            for name, arr in labels.items():
                _check_class_labels(name, arr, units[name])
        weights = None
        if w is not None:
            w = np.asarray(_np(w), np.float64)
            if w.ndim == 0 or len(w) != n:
                raise ValueError(f"validation_data's sample_weight must have one entry per "
                                 f"sample ({n}). Received: sample_weight of shape {w.shape}")
            weights = w.reshape(n, -1).mean(axis=1)
        return cls(rep, labels, weights)


def _output_units(model: Any, rep: RepresentativeDataset, outputs: list[str]) -> dict[str, int | None]:
    """Output name -> its last dimension (a classifier's classes), None for a 1-D output.

    Read from `model.outputs`, or for a subclassed model (which has none) from
    its predictions on one batch of `rep`.
    """
    tensors = getattr(model, "outputs", None) or []
    if len(tensors) == len(outputs):
        shapes = [tuple(t.shape) for t in tensors]
    else:
        pred = _predict_float(model, rep.take(rep.batch), outputs, rep.batch)
        shapes = [pred[name].shape for name in outputs]
    return {name: shape[-1] if len(shape) >= 2 else None for name, shape in zip(outputs, shapes)}


def _check_class_labels(name: str, labels: np.ndarray, units: int | None) -> None:
    """Refuses class indices that a classifier output of `units` classes cannot score.

    Only one integral label per sample for an output of 2+ units is read as a
    class index (as `val_int8_accuracy` and a sparse loss read it); one-hot
    rows, targets of the output's shape and non-integral targets are left alone.

    Raises:
        ValueError: Naming the output, the valid classes and the labels received.
    """
    if units and units >= 2 and labels.ndim == 2 and labels.shape[1] not in (1, units):
        raise ValueError(
            f"validation_data labels for output {name!r} must be class indices or one-hot rows "
            f"of {units} (the output has {units} units). Received: labels of shape {labels.shape}")
    if not units or units < 2 or labels.size != len(labels) or not np.issubdtype(
            labels.dtype, np.number):
        return
    if not np.array_equal(labels, np.round(labels)):
        return  # not class indices: targets of a custom loss
    low, high = labels.min(), labels.max()
    if low < 0 or high >= units:
        raise ValueError(
            f"validation_data labels for output {name!r} must be class indices in 0..{units - 1} "
            f"(the output has {units} units) or one-hot rows of {units}. "
            f"Received: labels {low:g}..{high:g}")


def _collect_stream(data: Any, model: Any, specs: Sequence[Any], steps: int | None = None):
    """Reads a tf.data.Dataset or iterable of x / (x, y) / (x, y, w) into arrays.

    Reads at most `steps` items; without `steps`, a stream with no known end is
    refused past `tfq8.data.UNSIZED_MAX_BYTES` of samples (`StreamBudget`).
    """
    import tensorflow as tf  # noqa: PLC0415

    endless = False  # no known end: may never stop
    if isinstance(data, tf.data.Dataset):
        cardinality = data.cardinality()
        if cardinality == tf.data.INFINITE_CARDINALITY and steps is None:
            raise ValueError(
                "validation_data is an infinite tf.data.Dataset: pass validation_steps (the "
                "number of batches to read, as in model.fit) or take() a finite part of it. "
                "Received: a dataset of infinite cardinality and validation_steps=None")
        endless = cardinality == tf.data.UNKNOWN_CARDINALITY
        items = data.as_numpy_iterator()
    elif _is_pydataset(data):  # Keras 3's PyDataset, tf_keras' Sequence
        count = pydataset_batches(data, "validation_data")
        endless = count is None
        items = (data[i] for i in (itertools.count() if endless else range(count)))
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        items = (data[i] for i in range(len(data)))  # sequences
    else:
        endless = not hasattr(data, "__len__")
        items = iter(data)
    if steps is not None:
        items = itertools.islice(items, steps)
    budget = StreamBudget("validation_data", data, "validation_steps=<number of batches to "
                          "read> as model.fit takes it", "validation_steps=None",
                          endless=endless and steps is None)
    xs, ys, ws = [], [], []
    rank0 = len(specs[0].shape)
    batched = None
    empty = EmptyRun("validation_data")
    for item in items:
        if isinstance(item, tuple) and 1 <= len(item) <= 3:
            x, y, w = (list(item) + [None, None])[:3]
        else:
            x, y, w = item, None, None
        x, y, w = _np(x), None if y is None else _np(y), None if w is None else _np(w)
        if batched is None:
            first = x[specs[0].name] if isinstance(x, dict) and specs[0].name in x else (
                x[0] if isinstance(x, list) else x)
            first = next(iter(x.values())) if isinstance(x, dict) and not isinstance(
                first, np.ndarray) else first
            batched = np.asarray(first).ndim == rank0
        if not batched:
            x, y, w = _add_batch_axis(x), _add_batch_axis(y), _add_batch_axis(w)
        xs.append(x)
        ys.append(y)
        ws.append(w)
        samples = len(_arrays(x)[0])
        empty.add(samples=samples, shapes=[a.shape for a in _arrays(x)])
        budget.add(samples=samples,
                   nbytes=sum(a.nbytes for a in _arrays(x) + _arrays(y) + _arrays(w)))
    if not xs:
        raise ValueError("validation_data is empty: expected at least one batch. Received: 0 batches")
    y = None if any(v is None for v in ys) else _concat(ys)
    w = None if any(v is None for v in ws) else _concat(ws)
    return _concat(xs), y, w


def _arrays(x: Any) -> list[np.ndarray]:
    """The arrays of an item's x, y or w (a dict, list, array or None)."""
    if x is None:
        return []
    if isinstance(x, dict):
        return [np.asarray(v) for v in x.values()]
    if isinstance(x, list):
        return [np.asarray(v) for v in x]
    return [np.asarray(x)]


def _add_batch_axis(x: Any) -> Any:
    if x is None:
        return None
    if isinstance(x, dict):
        return {k: np.asarray(v)[None] for k, v in x.items()}
    if isinstance(x, list):
        return [np.asarray(v)[None] for v in x]
    return np.asarray(x)[None]


def _concat(parts: list[Any]) -> Any:
    first = parts[0]
    if isinstance(first, dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in first}
    if isinstance(first, list):
        return [np.concatenate([p[i] for p in parts]) for i in range(len(first))]
    return np.concatenate(parts)


def _by_output(y: Any, outputs: list[str]) -> dict[str, np.ndarray]:
    if isinstance(y, dict):
        unknown = sorted(set(y) - set(outputs))
        if unknown:
            raise ValueError(
                f"validation_data labels are keyed by output name; the model's outputs are "
                f"{outputs}. Received keys: {sorted(y)}")
        return {k: np.asarray(v) for k, v in y.items()}
    if isinstance(y, list):
        if len(outputs) == 1 and len(y) != 1:
            return {outputs[0]: np.asarray(y)}
        if len(y) != len(outputs):
            raise ValueError(
                f"validation_data has labels for {len(y)} outputs; the model has "
                f"{len(outputs)} ({outputs}). Received: {len(y)} label arrays")
        return {name: np.asarray(v) for name, v in zip(outputs, y)}
    if len(outputs) != 1:
        raise ValueError(
            f"The model has {len(outputs)} outputs ({outputs}): give validation labels as a "
            "list or a dict by output name. Received: a single label array")
    return {outputs[0]: np.asarray(y)}


# ---------------------------------------------------------------- running
def run_int8(blob: bytes, rep: RepresentativeDataset, outputs: list[str],
             batch_size: int | None, *, num_threads: int | None = None
             ) -> tuple[dict[str, np.ndarray], int]:
    """Runs the int8 model on `rep`.

    Returns:
        Keras output name -> dequantized float32 outputs, and the batch size
        used (`batch_size`, or `ModelRunner`'s default for the data).
    """
    runner = ModelRunner(blob, num_threads=num_threads or os.cpu_count() or 1,
                         batch_size=None if batch_size is None else max(1, min(batch_size, len(rep))))
    if len(runner.inputs) != len(rep.inputs):
        raise RuntimeError(
            f"The int8 model has {len(runner.inputs)} inputs; the data has {len(rep.inputs)}.")
    inputs = _in_runner_order(runner, rep)
    runner.fit_batch_to(inputs)
    results = runner.run(inputs)
    return {name: np.asarray(results[k], np.float32)
            for name, k in zip(outputs, _output_order(runner, outputs))}, runner.batch_size


def _in_runner_order(runner: ModelRunner, rep: RepresentativeDataset) -> list[np.ndarray]:
    """`rep`'s arrays (TFLite input order) in the runner's order, by name when both name them."""
    keys = [t.key for t in runner.inputs]
    names = [s.name for s in rep.specs] if rep.specs else []
    if len(set(keys)) == len(keys) and sorted(names) == sorted(keys):
        return [rep.inputs[names.index(k)] for k in keys]
    return list(rep.inputs)


def _output_order(runner: ModelRunner, outputs: list[str]) -> list[int]:
    """Position in `runner.outputs` of each Keras output, by signature name when possible
    (else by position: the runner lists Keras 3's `output_0`, `output_1`, ... in order)."""
    keys = [t.key for t in runner.outputs]
    unique = len(set(keys)) == len(keys)  # signature names; tensor names may repeat
    if unique and set(outputs) <= set(keys):
        return [keys.index(n) for n in outputs]
    if len(keys) != len(outputs):
        raise RuntimeError(f"The int8 model has {len(keys)} outputs; the Keras model {len(outputs)}.")
    return list(range(len(keys)))


def _predict_float(model: Any, rep: RepresentativeDataset, outputs: list[str],
                   batch_size: int) -> dict[str, np.ndarray]:
    names = [s.name for s in rep.specs]
    as_dict = len(names) > 1 or _takes_dict(model)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in outputs}
    for arrays in rep.batches(batch_size):
        x = dict(zip(names, arrays)) if as_dict else arrays[0]
        y = model(x, training=False)
        if isinstance(y, dict):
            y = [y[n] for n in outputs]
        elif not isinstance(y, (list, tuple)):
            y = [y]
        for n, v in zip(outputs, y):
            parts[n].append(np.asarray(v.numpy() if hasattr(v, "numpy") else v, np.float32))
    return {n: np.concatenate(v) for n, v in parts.items()}


def _takes_dict(model: Any) -> bool:
    """Whether the Keras model was built on a dict of inputs (`keras.Input`s by name)."""
    try:
        return isinstance(model.input, dict)
    except Exception:  # noqa: BLE001 - unbuilt or subclassed models have no `input`
        return False


# ---------------------------------------------------------------- metrics
def _mean(values: np.ndarray, weights: np.ndarray | None) -> float:
    """Mean per sample, weighted as Keras weights a metric (`weighted_metrics`)."""
    values = np.asarray(values, np.float64).reshape(len(values), -1).mean(axis=1)
    if weights is None:
        return float(values.mean())
    total = weights.sum()
    return float((values * weights).sum() / total) if total > 0 else float("nan")


def _loss_mean(values: np.ndarray, weights: np.ndarray | None) -> float:
    """Mean per sample, weighted as Keras reduces a loss: the weighted sum over the count."""
    values = np.asarray(values, np.float64).reshape(len(values), -1).mean(axis=1)
    return float(values.mean() if weights is None else (values * weights).sum() / len(values))


def _int8_metrics(model: Any, outputs: list[str], floats: dict[str, np.ndarray],
                  int8: dict[str, np.ndarray], y: dict[str, np.ndarray] | None,
                  weights: np.ndarray | None, skipped: dict[str, str] | None = None
                  ) -> dict[str, float]:
    """int8 accuracy, float-vs-int8 agreement, loss and compiled metrics."""
    out: dict[str, float] = {}
    single = len(outputs) == 1
    config = _compile_config(model)
    plain = _metrics_by_output(model, config.get("metrics"), outputs)
    weighted = _metrics_by_output(model, config.get("weighted_metrics"), outputs)
    accuracies, agreements, weighted_accuracies = {}, {}, {}
    for name in outputs:
        pf, pq = floats[name], int8[name]
        labels = None if y is None else y.get(name)
        kind = _output_kind(pf, labels)
        if kind is None:
            continue
        threshold = None if kind == "multiclass" else (
            0.5 if pf.min() >= 0.0 and pf.max() <= 1.0 else 0.0)
        top_q = top1(pq, threshold)
        agreements[name] = _mean(top_q == top1(pf, threshold), None)
        if labels is not None:
            compiled = _names_accuracy(plain.get(name)) or _names_accuracy(weighted.get(name))
            if kind == "multiclass" and labels.shape == pf.shape:
                truth = np.argmax(labels, axis=-1).reshape(top_q.shape)
            else:
                truth = labels.reshape(top_q.shape).astype(np.int64)
                if compiled:  # Keras' binary accuracy thresholds at 0.5, logits or not
                    top_q = top1(pq, 0.5)
            # Keras weights accuracy by sample_weight only among weighted_metrics; named in
            # both, the weighted one is logged as weighted_accuracy.
            in_weighted, in_plain = (_names_accuracy(weighted.get(name)),
                                     _names_accuracy(plain.get(name)))
            accuracies[name] = _mean(top_q == truth, weights if in_weighted and not in_plain
                                     else None)
            if in_weighted and in_plain:
                weighted_accuracies[name] = _mean(top_q == truth, weights)
    prefix = (lambda n: "val_int8_") if single else (lambda n: f"val_int8_{n}_")
    for name, value in accuracies.items():
        out[prefix(name) + "accuracy"] = value
    for name, value in weighted_accuracies.items():
        out[prefix(name) + "weighted_accuracy"] = value
    for name, value in agreements.items():
        out[prefix(name) + "agreement"] = value
    if not single:
        if len(accuracies) == 1:
            out["val_int8_accuracy"] = next(iter(accuracies.values()))
        if agreements:
            out["val_int8_agreement"] = float(np.mean(list(agreements.values())))
    if y is not None:
        out.update(_compiled_int8(model, config, outputs, int8, y, weights,
                                  {} if skipped is None else skipped))
    return out


def _compile_config(model: Any) -> dict[str, Any]:
    """The arguments `compile` received: the objects themselves where Keras 3 and tf_keras
    keep them (custom metric functions and Metric objects are not serializable by name),
    else the serialized compile config."""
    config = _tflite.compile_arguments(model)
    if config is not None:
        return config
    try:
        return model.get_compile_config() or {}
    except Exception:  # noqa: BLE001 - not compiled
        return {}


def _names_accuracy(specs: Any) -> bool:
    """Whether a compile config's metrics (any nesting) include plain accuracy."""
    if isinstance(specs, dict) and not {"class_name", "config"} <= set(specs):
        return any(_names_accuracy(v) for v in specs.values())
    if isinstance(specs, (list, tuple)):
        return any(_names_accuracy(v) for v in specs)
    return specs in ("accuracy", "acc")


def _output_kind(pred: np.ndarray, labels: np.ndarray | None) -> str | None:
    if pred.ndim < 2:
        return None
    if pred.shape[-1] > 1:
        one_hot = labels is not None and labels.shape == pred.shape and bool(
            np.isin(labels, (0, 1)).all() and (labels.sum(axis=-1) == 1).all())
        if labels is None or one_hot or labels.size == pred[..., 0].size:
            return "multiclass"
        return None  # targets of the output's shape that are not one-hot: regression
    if labels is not None and labels.size == pred.size and np.isin(labels, (0, 1)).all():
        return "binary"
    return None


def _compiled_int8(model: Any, config: dict[str, Any], outputs: list[str],
                   int8: dict[str, np.ndarray], y: dict[str, np.ndarray],
                   weights: np.ndarray | None, skipped: dict[str, str]) -> dict[str, float]:
    """int8 versions of the compiled loss (with its `loss_weights`) and of the
    (non-accuracy) metrics, `weighted_metrics` weighted by `sample_weight`; what
    cannot be computed goes to `skipped` (name -> why)."""
    module = keras_module(model)
    out: dict[str, float] = {}
    single = len(outputs) == 1
    loss = getattr(model, "loss", None)
    per_output = _per_output(loss, outputs, lists_per_output=True)
    scale = _per_output(config.get("loss_weights"), outputs, lists_per_output=True)
    losses = []
    for name, spec in per_output.items():
        if spec is None or name not in y:
            continue
        value = _apply(module.losses, spec, y[name], int8[name], weights, is_loss=True,
                       skipped=skipped)
        if value is not None:
            factor = scale.get(name)
            losses.append(value * (1.0 if factor is None else float(factor)))
            if not single:
                out[f"val_int8_{name}_loss"] = value
    if losses and len(losses) == sum(1 for s in per_output.values() if s is not None):
        # Keras' loss also holds the weights' regularization losses (the same in float and int8).
        regularization = sum(float(np.asarray(v)) for v in getattr(model, "losses", []) or [])
        out["val_int8_loss"] = float(sum(losses)) + regularization
    unweighted: set[tuple[str, str]] = set()  # (output, metric name) of `metrics`
    for key_, metric_weights in (("metrics", None), ("weighted_metrics", weights)):
        for name, specs in _metrics_by_output(model, config.get(key_), outputs).items():
            if specs is None or name not in y:
                continue
            for spec in specs if isinstance(specs, (list, tuple)) else [specs]:
                if spec in ("accuracy", "acc") or spec is None:
                    continue  # val_int8_accuracy
                value, metric_name = _metric(module.metrics, spec, y[name], int8[name],
                                             metric_weights, skipped)
                if key_ == "metrics":
                    unweighted.add((name, metric_name or _spec_name(spec)))
                elif (name, metric_name) in unweighted:
                    # Keras (3 and 2) names a weighted metric that an unweighted one's name
                    # already took "weighted_<name>" (`<output>_weighted_<name>`).
                    metric_name = f"weighted_{metric_name}"
                if value is not None:
                    key = f"val_int8_{metric_name}" if single else f"val_int8_{name}_{metric_name}"
                    out.setdefault(key, value)
    return out


def _metrics_by_output(model: Any, spec: Any, outputs: list[str]) -> dict[str, Any]:
    """Compiled `metrics` or `weighted_metrics` by output name, as the model's framework
    pairs them: Keras 3 gives a list as long as the outputs one entry per output (by
    position); tf_keras applies a flat list of metrics to every output."""
    return _per_output(spec, outputs, lists_per_output=not is_tf_keras_model(model))


def _per_output(spec: Any, outputs: list[str], *, lists_per_output: bool = False
                ) -> dict[str, Any]:
    """A compile argument by output name. A dict is keyed by output; a list as
    long as the outputs gives one entry per output where `lists_per_output`
    (losses, loss weights, Keras 3's metrics) or where its entries are not all
    names (tf_keras' metrics: a list of names applies to every output)."""
    if spec is None:
        return {}
    if isinstance(spec, dict) and not {"class_name", "config"} <= set(spec):
        return {n: spec.get(n) for n in outputs}
    if len(outputs) == 1:
        return {outputs[0]: spec[0] if lists_per_output and isinstance(spec, (list, tuple))
                and len(spec) == 1 else spec}
    if isinstance(spec, (list, tuple)) and len(spec) == len(outputs) and (
            lists_per_output or not all(isinstance(s, str) for s in spec)):
        return dict(zip(outputs, spec))
    return {n: spec for n in outputs}


def _spec_name(spec: Any) -> str:
    """A compiled loss or metric's name as Keras shows it."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and "config" in spec:  # serialized
        config = spec["config"]
        return str(config.get("name", spec.get("class_name")) if isinstance(config, dict) else config)
    return str(getattr(spec, "name", None) or getattr(spec, "__name__", None) or spec)


def _skip(skipped: dict[str, str] | None, kind: str, spec: Any, error: Exception) -> None:
    reason = f"{type(error).__name__}: {first_line(error)}"
    _log.debug("Could not compute the int8 %s %r: %s", kind, spec, reason)
    if skipped is not None:
        skipped.setdefault(f"{kind} {_spec_name(spec)!r}", reason)


def _apply(module: Any, spec: Any, y_true: np.ndarray, y_pred: np.ndarray,
           weights: np.ndarray | None, *, is_loss: bool,
           skipped: dict[str, str] | None = None) -> float | None:
    try:
        fn = spec if callable(spec) else module.get(spec)
        y_true = _like(y_true, y_pred)
        if is_loss and weights is not None and hasattr(fn, "reduction"):  # a Loss object
            value = np.asarray(fn(y_true, y_pred, sample_weight=weights))  # Keras' reduction
        else:
            value = np.asarray(fn(y_true, y_pred))
        if value.ndim == 0:
            return float(value)
        return (_loss_mean if is_loss else _mean)(value, weights)
    except Exception as e:  # noqa: BLE001 - int8 extras are best effort
        _skip(skipped, "loss" if is_loss else "metric", spec, e)
        return None


def _like(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Labels `[N]` for a one-unit output `[N, 1]` get its rank, as Keras' compiled loss
    gives them (its loss functions refuse the mismatch)."""
    if y_true.ndim == y_pred.ndim - 1 and y_pred.shape[-1:] == (1,):
        return y_true[..., None]
    return y_true


def _metric(module: Any, spec: Any, y_true: np.ndarray, y_pred: np.ndarray,
            weights: np.ndarray | None, skipped: dict[str, str] | None = None
            ) -> tuple[float | None, str]:
    try:
        obj = module.get(spec)
        if isinstance(obj, type):
            obj = obj()
        y_true = _like(y_true, y_pred)
        if _is_top_k(module, obj):
            y_pred = _ties_broken(y_pred)
        if hasattr(obj, "update_state"):
            obj = obj.__class__.from_config(obj.get_config())
            obj.update_state(y_true, y_pred, sample_weight=weights)
            return float(np.asarray(obj.result())), spec if isinstance(spec, str) else obj.name
        # Keras names a metric given as a string by that string ("mae", not its function's name).
        name = spec if isinstance(spec, str) else getattr(obj, "__name__", str(spec))
        value = np.asarray(obj(y_true, y_pred))
        return (float(value) if value.ndim == 0 else _mean(value, weights)), name
    except Exception as e:  # noqa: BLE001 - int8 extras are best effort
        _skip(skipped, "metric", spec, e)
        return None, ""


def _is_top_k(module: Any, obj: Any) -> bool:
    """Whether a metric is Keras' (sparse) top-k categorical accuracy, on scores."""
    classes = tuple(getattr(module, n) for n in ("TopKCategoricalAccuracy",
                                                 "SparseTopKCategoricalAccuracy"))
    functions = [getattr(module, n) for n in ("top_k_categorical_accuracy",
                                              "sparse_top_k_categorical_accuracy")]
    if isinstance(obj, classes):
        return not getattr(obj, "from_sorted_ids", False)  # Keras 3: y_pred holds class ids
    return any(obj is f for f in functions)


def _ties_broken(scores: np.ndarray) -> np.ndarray:
    """Scores in the same order with ties broken toward the lower class index.

    Keras' top-k metrics count every class tied at the k-th score as a hit. Float
    scores rarely tie, but int8 outputs do: a softmax dequantized from int8 holds a
    few distinct values per row, so a true class that rounded to the same level as
    many others would count as in the top k. An app reads the top k as
    `tf.math.top_k` and `argmax` do, lower index first on ties; top-k metrics
    depend only on the order, so ranks that keep it with the ties broken give the
    int8 model's figure (and float scores without ties their own).
    """
    if scores.ndim < 2:
        return scores
    order = np.argsort(-scores, axis=-1, kind="stable")
    classes = scores.shape[-1]
    ranks = np.empty(order.shape, np.float32)
    np.put_along_axis(ranks, order, np.arange(classes, 0, -1, dtype=np.float32), axis=-1)
    return ranks
