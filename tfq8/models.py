"""Accept Keras 3 and tf_keras models or model files; build TFLite converters.

tfq8 accepts:

* Keras 3 `Sequential`, functional and subclassed models (subclassed ones must be
  built, i.e. called once or `build()`-ed);
* `tf_keras` (Keras 2) models, including tfmot quantization-aware-trained
  ones (`tfq8.qat`);
* paths to `.keras` and `.h5` files and SavedModel folders.

Example:
    >>> handle = load_model("model.keras")
    >>> [s.name for s in handle.specs]
    ['image']
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import random
import re
import weakref
import zipfile
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from tfq8 import _tflite
from tfq8.errors import UnsupportedOpError
from tfq8 import qat as _qat
from tfq8.mixed_precision import float32_model
from tfq8.data import InputSpec, short_name

_log = logging.getLogger("tfq8")


def _keras3():
    import keras  # noqa: PLC0415

    return keras


def _tf_keras():
    try:
        import tf_keras  # noqa: PLC0415

        return tf_keras
    except ImportError:  # pragma: no cover - optional at run time
        return None


def is_keras_model(obj: Any) -> bool:
    """True for Keras 3 and tf_keras models."""
    return isinstance(obj, _keras3().Model) or is_tf_keras_model(obj)


def is_tf_keras_model(obj: Any) -> bool:
    """True for a `tf_keras` (Keras 2) model."""
    tfk = _tf_keras()
    return tfk is not None and isinstance(obj, tfk.Model)


def keras_module(model: Any) -> Any:
    """The Keras a model belongs to: the `tf_keras` module for a tf_keras model,
    else `keras` (Keras 3)."""
    return _tf_keras() if is_tf_keras_model(model) else _keras3()


def weights_fingerprint(model: Any) -> str:
    """SHA-256 of a Keras model's weights, their shapes and values (`ModelHandle.fingerprint`)."""
    h = hashlib.sha256()
    for w in model.weights:
        v = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        h.update(str(v.shape).encode())
        h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()


def nonfinite_weights(model: Any) -> list[str]:
    """The names of a Keras model's floating-point weights that a diverged training
    run left: those holding NaN, and trainable ones holding Inf.

    Such weights make activations NaN on every sample, and TFLite's calibrator
    records no range for them. Inf in a non-trainable weight is left out: it is
    the model's own constant, such as a causal mask of 0s and -infs added to
    attention scores before their softmax, and calibrates as it is.

    Args:
        model: A Keras 3 or tf_keras model.

    Returns:
        The weights' paths (Keras 3, such as `'sequential/dense/kernel'`) or
        names (tf_keras), in `model.weights` order; empty when none is listed.

    Example:
        >>> nonfinite_weights(model)
        []
    """
    trainable = {id(w) for w in model.trainable_weights}
    bad = []
    for w in model.weights:
        v = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        if not np.issubdtype(v.dtype, np.floating) or np.isfinite(v).all():
            continue
        if id(w) in trainable or np.isnan(v).any():
            bad.append(str(getattr(w, "path", None) or w.name))
    return bad


class ModelHandle:
    """A model tfq8 can convert: a live Keras model, a SavedModel folder or a float `.tflite`.

    Attributes:
        keras_model: The Keras model, or None.
        saved_model_dir: The SavedModel folder, or None.
        tflite_model: The float `.tflite` flatbuffer, or None.
        specs: Input specs in the order of the TFLite model's inputs.
    """

    def __init__(self, keras_model: Any = None, saved_model_dir: str | None = None,
                 tflite_model: bytes | None = None):
        self.keras_model = keras_model
        self.saved_model_dir = saved_model_dir
        self.tflite_model = tflite_model
        self._specs: list[InputSpec] | None = None
        self._batch_one: Any = None  # the model with its batch size fixed at 1, if it needs it
        self._batch_checked = False
        self._list_inputs: Any = None  # the model with list inputs, or itself (`_with_list_inputs`)

    @property
    def specs(self) -> list[InputSpec]:
        """Input specs in the TFLite graph's order (computed on first use: for
        several Keras inputs and for SavedModels this needs a float conversion)."""
        if self._specs is None:
            self._specs = _specs_of(self)
        return self._specs

    def calibrated(self, sample_gen: Any, *,
                   on_float_model: Callable[[bytes], None] | None = None) -> bytes:
        """The calibrated float model: TFLite's calibrator run on `sample_gen`
        (`_tflite.calibrate_only`; `_tflite.calibrate_tflite` for a `.tflite`)."""
        if self.tflite_model is not None:
            return _tflite.calibrate_tflite(self.tflite_model, sample_gen,
                                            on_float_model=on_float_model)
        return _tflite.calibrate_only(self.converter(), sample_gen, on_float_model=on_float_model)

    def converter(self) -> tf.lite.TFLiteConverter:
        """A fresh TFLite converter for the model (see `batch_fixed_at_one` and
        `_with_list_inputs`).

        Raises:
            ValueError: For a `.tflite` model, which has no converter: it is
                the converter's output already.
        """
        if self.tflite_model is not None:
            raise ValueError("A .tflite model has no TFLite converter: it is a converter's "
                             "output already. tfq8.convert(...) quantizes it; "
                             "method='minmax' gives TFLite's own ranges. Received: a float "
                             ".tflite model")
        if self.keras_model is not None:
            if self.batch_fixed_at_one:
                return tf.lite.TFLiteConverter.from_keras_model(self._batch_one)
            return tf.lite.TFLiteConverter.from_keras_model(self._as_converted())
        return tf.lite.TFLiteConverter.from_saved_model(self.saved_model_dir)

    def _as_converted(self) -> Any:
        """The Keras model as the converter gets it (`_with_list_inputs`), built once."""
        if self._list_inputs is None:
            self._list_inputs = _with_list_inputs(self.keras_model)
        return self._list_inputs

    @property
    def batch_fixed_at_one(self) -> bool:
        """Whether the model converts with its batch size fixed at 1.

        TFLite's converter cannot lower the loop of a recurrent layer that is not
        unrolled (its TensorList of time steps) while the batch size is free,
        which it is in a Keras model by default: a Keras 3 `LSTM`, `GRU` or
        `SimpleRNN`, or a tf_keras `GRU`. With the batch size fixed at 1 the
        loop becomes a WHILE op, which tfq8 quantizes to int8 (`tfq8.loops`).
        So a Keras model with such a layer (anywhere: in a `TimeDistributed`
        or a custom layer too) and a free batch size, which the converter
        refuses as it is, converts as a model of batch size 1, one sample per
        run, as on a phone (logged); its inputs keep their names, a list or a
        dict of several too. A subclassed model converts so at the input
        shapes it was built for, one input or several. The converter is tried
        on the model as it is first, so models it takes keep their free batch
        size. (A tf_keras `LSTM` becomes TFLite's fused LSTM, whose state stays
        from one run to the next: tfq8 resets it before each run,
        `tfq8.harness.litert.invoke`, and so must an app.)
        """
        if not self._batch_checked:
            self._batch_checked = True
            model = self.keras_model
            try:  # the converter is tried once per model object
                needed = _NEEDS_BATCH_ONE[model]
            except (KeyError, TypeError):  # not tried yet, or not weakly referable
                needed = _needs_batch_one(model, self._as_converted())
                with contextlib.suppress(TypeError):
                    _NEEDS_BATCH_ONE[model] = needed
            self._batch_one = _with_batch_one(model) if needed else None
        return self._batch_one is not None

    def fingerprint(self) -> str:
        """SHA-256 of the weights (Keras), of the SavedModel's files or of the `.tflite`."""
        if self.keras_model is not None:
            return weights_fingerprint(self.keras_model)
        if self.tflite_model is not None:
            return hashlib.sha256(self.tflite_model).hexdigest()
        h = hashlib.sha256()
        for root, dirs, files in os.walk(self.saved_model_dir):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                h.update(os.path.relpath(path, self.saved_model_dir).encode())
                with open(path, "rb") as f:
                    h.update(f.read())
        return h.hexdigest()

    def check_inputs(self, inputs: Sequence[np.ndarray]) -> None:
        """Refuses samples TFLite's calibrator would fail on without saying which.

        Call it before anything runs TFLite's calibrator on `inputs` (in the
        model's graph order, as `specs`). See `_check_token_ids` and
        `_check_input_size`.

        Raises:
            ValueError: Naming the sample, the input and what is wrong.
        """
        self._check_token_ids(inputs)
        self._check_input_size(inputs)

    def _check_token_ids(self, inputs: Sequence[np.ndarray]) -> None:
        """Refuses token ids outside the vocabulary of the Keras `Embedding` they feed.

        TFLite's calibrator reports only "gather index out of bounds"; the
        Keras model names the layer and its `input_dim`, so the sample can be
        named too. Applies to Embedding layers that take a model input directly.
        """
        limits = _embedding_limits(self.keras_model) if self.keras_model is not None else {}
        for j, (spec, x) in enumerate(zip(self.specs, inputs)):
            found = limits.get(j if spec.position is None else spec.position)
            if found is None or not np.issubdtype(np.asarray(x).dtype, np.number) or not len(x):
                continue  # (ids may come as floats: a model built without an int Input)
            layer, size = found
            bad = ((x < 0) | (x >= size)).reshape(len(x), -1)
            if bad.any():
                k = int(np.argmax(bad.any(axis=1)))
                value = np.asarray(x[k]).reshape(-1)[np.argmax(bad[k])].item()
                raise ValueError(
                    f"Sample {k}: input {spec.name!r} holds token id {value}, outside the "
                    f"vocabulary of Embedding {layer!r} (input_dim={size}: ids 0..{size - 1}).")

    def _check_input_size(self, inputs: Sequence[np.ndarray]) -> None:
        """Refuses samples too small for the model, where its height/width are dynamic.

        TFLite's calibrator kills the process (SIGFPE) on an empty intermediate
        tensor, such as a VALID 3x3 convolution of a 2x2 image. For one-input
        Keras models, the model is first traced as a graph at the first
        sample's shape, where no kernel runs, and every float tensor of the
        graph must be non-empty. Running the sample alone is not enough: on
        some CPUs oneDNN returns garbage for an empty convolution instead of
        failing, and Keras before 3.13 infers shapes without complaint. Then
        Keras runs the sample, and its reason is reported if it fails. Call it
        before anything runs TFLite's calibrator on `inputs`.

        Raises:
            ValueError: Naming the input shape and the reason.
        """
        if (self.keras_model is None or len(inputs) != 1
                or not any(None in s.shape[1:] for s in self.specs)):
            return
        sample = inputs[0][:1]
        shape = tuple(sample.shape[1:])
        try:
            empty = _empty_tensor(self.keras_model, sample)
            if empty is None:
                self.keras_model(sample, training=False)
        except Exception as e:  # noqa: BLE001 - Keras' own message says what is wrong
            raise ValueError(f"Sample 0: the model cannot run on inputs of shape {shape}: "
                             f"{_keras_reason(e)}") from None
        if empty is not None:
            raise ValueError(f"Sample 0: the model cannot run on inputs of shape {shape}: "
                             f"{empty}; the inputs are smaller than its kernels or pooling "
                             "windows allow.")

    def to_float_tflite(self) -> bytes:
        """The plain float32 `.tflite` conversion of the model.

        Raises:
            UnsupportedOpError: If TFLite's converter rejects an op of the model.
        """
        if self.tflite_model is not None:
            return self.tflite_model
        return _tflite.convert_float(self.converter())


# Keras 3's, tf_keras' and TensorFlow's words for a window larger than its input.
_EMPTY_OUTPUT = re.compile(r"output size would be|output is <= 0|negative dimension", re.I)


def _keras_reason(error: Exception) -> str:
    """The line of a Keras or TF error that says what is wrong."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    # A graph op's definition: "for '{{node m/conv2d/Conv2D}} = Conv2D[...](...)'" -> "in m/conv2d/Conv2D"
    text = re.sub(r"for '\{\{node ([^}]*)\}\}[^']*'", r"in \1", text)
    lines = [ln.strip() for ln in text.splitlines()]
    return (next((ln for ln in lines if _EMPTY_OUTPUT.search(ln)), None)
            or next((ln for ln in lines if ln and not ln.startswith(("Exception encountered",
                                                                      "in user code", "File "))),
                    type(error).__name__))


def _empty_tensor(model: Any, sample: np.ndarray) -> str | None:
    """Traces `model` at `sample`'s shape (no kernel runs) and names an empty float tensor.

    Returns:
        "op NAME gives an empty tensor of shape (...)" for the first such op,
        or None if there is none or the model cannot be traced (best effort).

    Raises:
        ValueError: The tracer's reason when a window is larger than its input,
            such as "Negative dimension size ...".
    """
    try:
        fn = tf.function(lambda x: model(x, training=False))
        graph = fn.get_concrete_function(tf.TensorSpec(sample.shape, sample.dtype)).graph
    except Exception as e:  # noqa: BLE001 - tracing is best effort; running the sample decides
        if isinstance(e, ValueError) and _EMPTY_OUTPUT.search(str(e)):
            raise
        return None
    for op in graph.get_operations():
        for t in op.outputs:
            dims = t.shape.as_list() if t.shape.rank else []
            if t.dtype.is_floating and 0 in dims:
                return f"op {op.name} gives an empty tensor of shape {tuple(dims)}"
    return None


def load_model(model: Any) -> ModelHandle:
    """Wraps a Keras model or loads a `.keras` / `.h5` / SavedModel / float `.tflite` path.

    Args:
        model: A Keras 3 or tf_keras model, a `ModelHandle`, a path, or the
            bytes of a float `.tflite`.

    Returns:
        A `ModelHandle`.

    Raises:
        TypeError: If `model` is neither a Keras model nor a path nor bytes.
        ValueError: If the path does not exist, is of an unknown kind, cannot be
            read, or the model is not built, or is a `.tflite` that is not
            float, or is a tfmot model tfq8 cannot
            convert (`tfq8.qat.check_model`).
        UnsupportedOpError: If the model computes in float16 or bfloat16 (a
            mixed-precision dtype policy) and no float32 copy of it can be made
            (`tfq8.mixed_precision`, which makes the copy tfq8 converts).
    """
    if isinstance(model, ModelHandle):
        return model
    if is_keras_model(model):
        if not model.built:
            raise ValueError(
                "The Keras model is not built: call it on a batch or call build() "
                f"first so its input shapes are known. Received: {type(model).__name__}"
            )
        with _python_random_kept():  # a float32 copy makes layers
            return ModelHandle(keras_model=_convertible(model))
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise ValueError(f"model path does not exist. Received: model={path!r}")
        if os.path.isdir(path):
            if not os.path.exists(os.path.join(path, "saved_model.pb")):
                if path.endswith(".tflite"):
                    raise ValueError(
                        "model path ends in .tflite but is a folder (holding no "
                        "saved_model.pb either): a float .tflite model is a file. "
                        f"Received: model={path!r}")
                raise ValueError(
                    "model folder is not a SavedModel (no saved_model.pb). "
                    f"Received: model={path!r}"
                )
            handle = ModelHandle(saved_model_dir=path)
            try:
                handle.specs  # noqa: B018 - reads the serving signature now, to fail early
                return handle
            except (UnsupportedOpError, SignaturesError):  # says what is wrong already
                raise
            except Exception as e:  # noqa: BLE001 - TF raises many kinds here
                first = str(e).splitlines()[0] if str(e) else ""
                raise ValueError(
                    "Could not read the SavedModel's serving signature (it needs one, "
                    f"such as Keras' model.export() writes): {type(e).__name__}: {first} "
                    "To convert another signature, write it as a float .tflite with "
                    "tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=[key])"
                    ".convert() and pass that file as the model. "
                    f"Received: model={path!r}"
                ) from e
        if path.endswith((".keras", ".h5", ".hdf5")):
            with _python_random_kept():
                return ModelHandle(keras_model=_convertible(_load_keras_file(path)))
        if path.endswith(".tflite"):
            return ModelHandle(tflite_model=_float_tflite(path))
        raise ValueError(
            "model path must be a .keras or .h5 file, a SavedModel folder or a float .tflite "
            f"file. Received: model={path!r}"
        )
    if isinstance(model, (bytes, bytearray, memoryview)):
        return ModelHandle(tflite_model=_float_tflite(model))
    raise TypeError(
        "model must be a Keras model, a path to a .keras/.h5 file, a SavedModel folder or a "
        f"float .tflite file, or .tflite bytes. Received: {type(model).__name__}"
    )


def _float_tflite(model: Any) -> bytes:
    """The bytes of a float `.tflite` (path or bytes), verified, for tfq8 to quantize.

    Raises:
        ValueError: If it cannot be read, is not a well-formed `.tflite`, or is
            quantized already (int8 weights or activations: its float model is
            what tfq8 needs).
    """
    from tfq8.harness.interpreter import read_model_bytes, verify_model  # noqa: PLC0415

    blob = read_model_bytes(model, arg="model")
    parsed = verify_model(blob, arg="model")
    # Quantized: integer tensors with a scale. A uint8 or int8 input without one (cast to
    # float, before a Rescaling layer) is a float model's input.
    quantized = sorted({_tflite.tensor_type_name(t.type) for sg in parsed.subgraphs or []
                        for t in sg.tensors or []
                        if _tflite.tensor_type_name(t.type) in ("INT8", "UINT8", "INT16")
                        and t.quantization is not None and t.quantization.scale is not None
                        and len(t.quantization.scale) > 0})
    if quantized:
        raise ValueError(
            f"model is a .tflite that is quantized already (it holds {'/'.join(quantized)} "
            "tensors): tfq8 quantizes a float .tflite, so pass the float model it came from "
            "(or the Keras model). Received: a quantized .tflite")
    if any(_tflite.tensor_type_name(t.type) == "FLOAT16" for sg in parsed.subgraphs or []
           for t in sg.tensors or []):
        raise ValueError(
            "model is a .tflite whose weights are stored in float16 (TFLite's float16 "
            "quantization), which TFLite's int8 quantizer cannot take: pass the float32 "
            ".tflite (or the Keras model). Received: a .tflite with FLOAT16 tensors")
    signatures = _signature_keys(blob)
    if len(signatures) > 1:
        raise ValueError(
            f"model is a .tflite with {len(signatures)} signatures ({', '.join(signatures)}), "
            "each its own graph: tfq8 calibrates and quantizes a model of one graph, with "
            "data for its inputs. Convert each function to a .tflite of its own "
            "(TFLiteConverter.from_concrete_functions with one function) and pass that. "
            f"Received: a .tflite with signatures {signatures}")
    fused = sorted({_tflite.op_name(parsed, op) for sg in parsed.subgraphs or []
                    for op in sg.operators or []
                    if _tflite.op_name(parsed, op).endswith("LSTM")
                    and (op.intermediates is None or len(op.intermediates) == 0)})
    if fused:
        raise UnsupportedOpError(
            f"model is a .tflite with {', '.join(fused)} op(s) that have no intermediate "
            "tensors: TFLite's converter adds those to a fused LSTM only when it quantizes, "
            "and its calibrator cannot run the LSTM without them. Pass the Keras model or "
            "SavedModel the .tflite came from. Received: a .tflite whose "
            f"{fused[0]} has no intermediate tensors")
    return blob


def load_reference(reference: Any) -> ModelHandle | None:
    """The loaded Keras model if `reference` (of `tfq8.check` or `tfq8.benchmark`) is one
    or a path to one (any path but a `.tflite`), else None; errors name `reference`.

    Example:
        >>> load_reference("model.keras").specs[0].name
        'image'
    """
    if is_tflite_source(reference) or not (
            isinstance(reference, (str, os.PathLike)) or is_keras_model(reference)):
        return None
    try:
        return load_model(reference)
    except ValueError as e:  # load_model's "Received: model=..." is the reference here
        message = re.sub(r"(?<![\w-])model=", "reference=", str(e))
        raise ValueError(f"reference: {message}") from None


def is_tflite_source(obj: Any) -> bool:
    """Whether a model argument is a `.tflite`: bytes, or a path ending in `.tflite`."""
    return isinstance(obj, (bytes, bytearray, memoryview)) or (
        isinstance(obj, (str, os.PathLike)) and os.fspath(obj).endswith(".tflite"))


# Keras model -> whether it converts only with its batch size fixed at 1 (a bool: a value
# holding the model would keep the key alive).
_NEEDS_BATCH_ONE: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()


def _needs_batch_one(model: Any, as_converted: Any) -> bool:
    """Whether `model` has a loop that converts only with a fixed batch size (see
    `ModelHandle.batch_fixed_at_one`), which it does not have; `as_converted` is the
    model as the converter gets it (`_with_list_inputs`)."""
    found = _free_inputs(model) if _loop_layers(model) else None
    if not found or any(shape[0] is not None for shape, _, _, _ in found):
        return False
    try:
        _tflite.convert_float(tf.lite.TFLiteConverter.from_keras_model(as_converted))
        return False
    except UnsupportedOpError as e:
        if "TensorList" not in str(e):
            return False  # the conversion says why, as it will again
    _log.info("Recurrent layer(s) %s are not unrolled: TFLite's converter lowers their loops "
              "only with a fixed batch size, so the model converts with its batch size fixed "
              "at 1 (one sample per run). Build them with unroll=True for a free batch size.",
              _loop_layers(model))
    return True


def _loop_layers(model: Any) -> list[str]:
    """Names of the model's recurrent layers that are not unrolled, wherever they are (in
    a `Bidirectional`, a `TimeDistributed`, a custom layer)."""
    return [layer.name for layer in _tflite.keras_layers(model)
            if getattr(layer, "unroll", None) is False]


def _free_inputs(model: Any) -> list[tuple[tuple, str, str, Any]] | None:
    """(shape, dtype, name, dict key or None) of each input of a Keras model, in
    `model.inputs` order, or None where they cannot be told. A subclassed model has no
    `Input`: the shapes it was built for, with a free batch size, float32, named "input"
    (one), "input_1", "input_2", ... (a list) or by key (a dict, in sorted key order)."""
    inputs = getattr(model, "inputs", None) or []
    if inputs:
        struct = getattr(model, "input", None)
        keys = (sorted(struct) if isinstance(struct, dict)  # as Keras flattens a dict
                else [None] * len(inputs))
        if isinstance(struct, dict) and [id(struct[k]) for k in keys] != [id(t) for t in inputs]:
            return None
        return [(tuple(t.shape), _dtype_name(t.dtype), _keras_name(t), key)
                for t, key in zip(inputs, keys)]
    config = model.get_build_config() if hasattr(model, "get_build_config") else None
    shape = (config or {}).get("input_shape")
    if _is_shape(shape):
        return [((None, *shape[1:]), "float32", "input", None)]
    if isinstance(shape, dict) and shape and all(_is_shape(s) for s in shape.values()):
        return [((None, *shape[k][1:]), "float32", str(k), k) for k in sorted(shape)]
    if isinstance(shape, (list, tuple)) and shape and all(_is_shape(s) for s in shape):
        return [((None, *s[1:]), "float32", f"input_{k + 1}", None) for k, s in enumerate(shape)]
    return None  # (not built by a call)


def _is_shape(shape: Any) -> bool:
    """Whether a build config's entry is one input's shape (not a list or dict of them)."""
    return isinstance(shape, (list, tuple)) and bool(shape) and all(
        d is None or isinstance(d, int) for d in shape)


def _with_batch_one(model: Any) -> Any:
    """`model` called on inputs of batch size 1, named as its own, under its own name:
    the TFLite graph's tensor names start with it, and a name of Keras' choosing
    (functional_2, functional_3, ...) would change them at each conversion. A model
    built on a dict is called on a dict; the wrapper takes a list."""
    k = keras_module(model)
    found = _free_inputs(model)
    inputs = [k.Input(batch_shape=(1, *shape[1:]), dtype=dtype, name=name)
              for shape, dtype, name, _ in found]
    if found[0][3] is not None:
        args: Any = {key: inp for (_, _, _, key), inp in zip(found, inputs)}
    else:
        args = inputs[0] if len(inputs) == 1 else inputs
    return k.Model(inputs[0] if len(inputs) == 1 else inputs, model(args), name=model.name)


def _with_list_inputs(model: Any) -> Any:
    """`model`, or where TFLite's converter would fail on it, a model of the same
    layers that takes its inputs as a list.

    For a Keras 3 model, the converter exports `model.__call__` on a list of
    inputs: `model.inputs`, named as they are, in the order of their sorted dict
    keys. A model built on a dict whose keys are not in sorted order
    (`keras.Model({"z": z, "a": a}, ...)`) refuses a list, since Keras cannot
    tell which array is which; the converter swallows that error, falls back to
    its tf_keras path and fails there ("'NoneType' object is not callable"),
    whatever the inputs' shapes. The model returned takes `model.inputs` as a
    list, so each input keeps its name and its place in the graph, and the
    `.tflite`'s signature names the inputs as the model does. A functional model
    is rebuilt on its own graph (the same layers and tensor names: the same
    `.tflite` as the model with its keys sorted); a functional subclass that
    overrides `call` is called on the dict, by key, under its own name.

    Returns:
        `model` itself where the converter takes it (tf_keras models, list and
        single inputs, dicts whose keys are sorted), else the list-input model.
    """
    keras = _keras3()
    if not isinstance(model, keras.Model):
        return model
    try:
        struct = model.input
    except (AttributeError, ValueError):  # a subclassed model has no symbolic inputs
        return model
    if (not isinstance(struct, dict) or list(struct) == sorted(struct)
            or not all(isinstance(t, keras.KerasTensor) for t in struct.values())):
        return model
    keys = sorted(struct)  # the order of model.inputs, as Keras flattens a dict
    if _tflite.is_plain_functional(model):
        return keras.Model([struct[k] for k in keys], model.output, name=model.name)
    inputs = [keras.Input(batch_shape=struct[k].shape, dtype=struct[k].dtype,
                          name=struct[k].name) for k in keys]
    return keras.Model(inputs, model(dict(zip(keys, inputs))), name=model.name)


@contextlib.contextmanager
def _python_random_kept() -> Iterator[None]:
    """Puts Python's global `random` state back after the block.

    Keras draws a seed from it for each initializer made without one, as it loads a
    model file or copies a model, so the next model the user builds after
    `keras.utils.set_random_seed` would otherwise get other weights.
    """
    state = random.getstate()
    try:
        yield
    finally:
        random.setstate(state)


def _convertible(model: Any) -> Any:
    """Refuses tfmot models tfq8 cannot convert; a model that computes in half
    precision becomes its float32 copy (`tfq8.mixed_precision`)."""
    _qat.check_model(model)
    return float32_model(model)


def _embedding_limits(model: Any) -> dict[int, tuple[str, int]]:
    """Keras input index -> (name, input_dim) of the Embedding layer taking that input."""
    inputs = list(getattr(model, "inputs", None) or [])
    limits = {}
    for layer in sublayers(model):
        if type(layer).__name__ != "Embedding" or not hasattr(layer, "input_dim"):
            continue
        try:
            source = layer.input  # raises for a layer called on several tensors
        except (AttributeError, ValueError, RuntimeError):
            continue
        for k, t in enumerate(inputs):
            if source is t:
                limits[k] = (layer.name, int(layer.input_dim))
    return limits


def sublayers(model: Any) -> list[Any]:
    """The layers of a model, recursively through nested models."""
    return [sub for layer in getattr(model, "layers", [])
            for sub in [layer, *sublayers(layer)]]


def _check_file_format(path: str) -> None:
    """Refuses a `.keras` file that is not a zip archive and an `.h5` file HDF5 cannot open."""
    import h5py  # noqa: PLC0415 - a Keras dependency, needed only for files

    try:  # zipfile and h5py would report an unreadable file as another format
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ValueError(f"Could not read the model file: {e.strerror or e}. "
                         f"Received: model={path!r}") from None
    if zipfile.is_zipfile(path):
        return
    reason = "it is not a zip file" if path.endswith(".keras") else "it is not an HDF5 file"
    if h5py.is_hdf5(path):  # tf_keras loads HDF5 under either name
        try:
            with h5py.File(path, "r"):
                return
        except OSError as e:  # "Unable to ... open file (truncated file: eof = 9900, ...)"
            found = re.search(r"\(([^()]+)\)\s*$", str(e))
            reason = f"HDF5 cannot open it ({found.group(1) if found else e})"
    kind = "a valid .keras archive" if path.endswith(".keras") else "a valid .h5 model file"
    raise ValueError(
        f"model file exists but is not {kind}: {reason}. It may be truncated, corrupt or "
        f"of another format; save the model again with model.save(path). Received: model={path!r}")


def _load_keras_file(path: str) -> Any:
    _check_file_format(path)
    errors = []
    loaders = [("keras", _keras3().models.load_model)]
    tfk = _tf_keras()
    if tfk is not None:
        loaders.append(("tf_keras", tfk.models.load_model))
        # Last, and only then importing tfmot: QAT models need its quantize_scope.
        loaders.append(("tf_keras in tfmot's quantize_scope",
                        lambda p, **_: _qat.load_keras_file(p)))
    custom = unsafe = None
    unknown: dict[str, str] = {}  # loader -> the class it did not know
    for name, load in loaders:
        try:
            return load(path, compile=False)
        except _qat.QATReloadError as e:  # tfmot knows the classes, not this file format
            raise ValueError(f"Could not load the model file: {e}. Received: model={path!r}") from None
        except Exception as e:  # noqa: BLE001 - try the next loader
            text = str(e)
            # tf_keras: "Unknown layer: 'X'"; for a QuantizeConfig or quantizer "Unknown None: 'X'"
            found = re.search(r"Could not locate class '([^']+)'|Unknown [\w ]+: '([^']+)'", text)
            if found:
                unknown[name] = found.group(1) or found.group(2)
            custom = custom or (found and (found.group(1) or found.group(2)))
            first = text.splitlines()[0] if text else ""
            if name == "keras" and "safe_mode=False" in first:
                unsafe = first  # Keras 3 refused a Python lambda (such as a Lambda layer's)
                if zipfile.is_zipfile(path):  # a Keras 3 archive: tf_keras' errors would be noise
                    break
            errors.append(f"{name}: {type(e).__name__}: "  # Keras quotes whole model configs
                          + (first if len(first) <= 200 else first[:200] + "..."))
    if unsafe:
        raise ValueError(
            f"Could not load the model file: {unsafe.strip()} tfq8 loads model files in safe "
            "mode; if you trust the file, load it yourself with "
            f"keras.saving.load_model({path!r}, safe_mode=False) and pass the model to tfq8. "
            f"Received: model={path!r}")
    if errors and all("No model config found" in e for e in errors):
        raise ValueError(
            "model file holds weights only, no model (model.save_weights writes such files): "
            "build the model in code, load them with model.load_weights(path), and pass the "
            f"model. Received: model={path!r}")
    in_scope = unknown.get("tf_keras in tfmot's quantize_scope")
    if in_scope and in_scope != unknown.get("tf_keras"):
        # A QAT model: tf_keras alone stopped at a tfmot class (QuantizeLayer), which
        # tfmot's quantize_scope knows; the class missing is the user's own.
        raise ValueError(
            f"Could not load the model file: it is a quantization-aware-trained (tfmot) model "
            f"that uses the custom class {in_scope!r} (a layer, QuantizeConfig or quantizer "
            "of your own), which is not registered. Load it yourself inside "
            f"tfmot.quantization.keras.quantize_scope({{{in_scope!r}: {in_scope}, ...}}) with "
            "tf_keras.models.load_model(path) and pass the model, or register the class with "
            "@tf_keras.saving.register_keras_serializable(). "
            f"Received: model={path!r}")
    if custom:
        raise ValueError(
            f"Could not load the model file: it uses the custom class {custom!r}, which is not "
            "registered. Import the module that defines it, with the class decorated by "
            "@keras.saving.register_keras_serializable() (tf_keras.saving... for a tf_keras "
            "model), or load the model yourself "
            f"(custom_objects=...) and pass the model. Received: model={path!r}")
    raise ValueError(
        "Could not load the model file. Tried: " + "; ".join(errors)
        + f". Received: model={path!r}"
    )


def input_specs(model: Any) -> list[InputSpec]:
    """Input specs of a model (anything `load_model` accepts)."""
    return load_model(model).specs


def _specs_of(handle: ModelHandle) -> list[InputSpec]:
    m = handle.keras_model
    if m is not None:
        inputs = getattr(m, "inputs", None)
        if inputs:
            names = getattr(m, "input_names", None) or [_keras_name(t) for t in inputs]
            specs = [
                InputSpec(str(n), tuple(None if d is None else int(d) for d in t.shape),
                          _input_dtype(str(n), t.dtype), position=k)
                for k, (n, t) in enumerate(zip(names, inputs))
            ]
            if len(specs) == 1:
                return specs
            # The TFLite graph may order several inputs differently from Keras
            # (dict inputs are sorted by the exporter): follow the graph.
            return _in_tflite_order(specs, specs_from_tflite(handle.to_float_tflite()))
    # Subclassed models and SavedModels: read the float TFLite model's inputs (a float
    # .tflite as it is, with the batch size it may fix).
    as_is = handle.tflite_model is not None
    blob = handle.to_float_tflite()
    if handle.saved_model_dir is not None:
        signatures = _signature_keys(blob)
        if len(signatures) > 1:  # TFLite's converter converted every signature
            raise SignaturesError(
                f"model is a SavedModel with {len(signatures)} signatures "
                f"({', '.join(signatures)}), and TFLite's converter makes a graph of each: "
                "tfq8 takes a model of one graph. "
                "Write the signature you want as a float .tflite with "
                "tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=[key])"
                ".convert() and pass that file as the model. "
                f"Received: model={handle.saved_model_dir!r}")
    return specs_from_tflite(blob, keep_batch=as_is, by_signature=as_is)


class SignaturesError(ValueError):
    """A SavedModel whose signatures TFLite's converter turns into several graphs."""


def _signature_keys(model: bytes) -> list[str]:
    """The SignatureDef keys of a `.tflite` flatbuffer, in order (read in place)."""
    root = _tflite.schema.Model.GetRootAs(model, 0)
    keys = (root.SignatureDefs(k).SignatureKey() for k in range(root.SignatureDefsLength()))
    return [key.decode() if isinstance(key, bytes) else str(key) for key in keys]


def _in_tflite_order(specs: list[InputSpec], graph: list[InputSpec]) -> list[InputSpec]:
    by_name = {s.name: s for s in specs}
    if sorted(by_name) == sorted(g.name for g in graph):
        return [by_name[g.name] for g in graph]
    _log.warning("Could not match Keras input names %s to the TFLite graph's %s; using "
                 "the graph's order and names.", list(by_name), [g.name for g in graph])
    return graph


def specs_from_tflite(model: bytes, *, keep_batch: bool = False,
                      by_signature: bool = False) -> list[InputSpec]:
    """Input specs in the input order of a `.tflite` model.

    Reads the flatbuffer in place (no object-API copy of the model).

    Args:
        model: The `.tflite` flatbuffer.
        keep_batch: Keep a batch size the model fixes (its calibrator runs it so);
            by default the batch dimension is free (None).
        by_signature: Name the inputs as the model's one signature does, each
            with its place in the signature as `position` (`_signature_named`);
            by default by tensor name, without positions.
    """
    sg = _tflite.schema.Model.GetRootAs(model, 0).Subgraphs(0)
    specs = []
    for k in range(sg.InputsLength()):
        t = sg.Tensors(sg.Inputs(k))
        sig = (t.ShapeSignatureAsNumpy() if t.ShapeSignatureLength()
               else t.ShapeAsNumpy() if t.ShapeLength() else ())
        shape = tuple(None if int(d) < 0 else int(d) for d in sig)
        if shape and not keep_batch:
            shape = (None,) + shape[1:]
        name = t.Name()
        name = short_name(name.decode() if isinstance(name, bytes) else str(name))
        kind = _tflite.tensor_type_name(t.Type())
        if kind in ("STRING", "COMPLEX64", "COMPLEX128", "RESOURCE", "VARIANT"):
            raise _not_numbers(name, kind.lower(), "a .tflite")
        dtype = {"FLOAT32": np.float32, "INT32": np.int32, "INT64": np.int64,
                 "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}.get(kind, np.float32)
        specs.append(InputSpec(name, shape, np.dtype(dtype)))
    if by_signature:
        specs = _signature_named(model, [int(sg.Inputs(k)) for k in range(sg.InputsLength())],
                                 specs)
    return specs


def _signature_named(model: bytes, indices: list[int], specs: list[InputSpec]) -> list[InputSpec]:
    """The specs of a float `.tflite`'s inputs named as its signature names them (the
    names `tfq8.check` and LiteRT's signature runner use), each with its place in the
    signature's order as `position`.

    The signature lists the inputs by name, which is also the order of the Keras
    model's list of inputs where that is sorted (`keras.Model([a, b], ...)`), while
    the graph may take them in another order; `position` lets a list in the
    signature's order be read as such when only that order fits the shapes, as a
    list in Keras' order is for a Keras model (`tfq8.data`).
    """
    root = _tflite.schema.Model.GetRootAs(model, 0)
    if root.SignatureDefsLength() != 1 or root.SignatureDefs(0).SubgraphIndex() != 0:
        return specs
    sd = root.SignatureDefs(0)
    listed = [(sd.Inputs(k).Name(), int(sd.Inputs(k).TensorIndex()))
              for k in range(sd.InputsLength())]
    names = {index: name.decode() if isinstance(name, bytes) else str(name)
             for name, index in listed}
    if sorted(names) != sorted(indices) or len(set(names.values())) != len(names):
        return specs
    position = {index: k for k, (_, index) in enumerate(listed)}
    return [dataclasses.replace(spec, name=names[i], position=position[i])
            for spec, i in zip(specs, indices)]


def _keras_name(t: Any) -> str:
    name = getattr(t, "name", "input")
    return name.split(":")[0]


def _dtype_name(dtype: Any) -> str:
    return getattr(dtype, "name", None) or str(dtype)


def _input_dtype(name: str, dtype: Any) -> np.dtype:
    """A Keras input's dtype as numpy's, refused unless it holds numbers (not strings)."""
    text = _dtype_name(dtype)
    try:
        found = np.dtype(text)
    except TypeError:
        found = None
    if found is None or found.kind in "OSUc":
        raise _not_numbers(name, text, "a model")
    return found


def _not_numbers(name: str, dtype: str, model: str) -> ValueError:
    """The error for a model input that does not take numbers (strings, say)."""
    return ValueError(
        f"model input {name!r} has dtype {dtype}: tfq8 quantizes models whose inputs are "
        "numbers (float, integer or bool). Turn such data into numbers outside the model "
        "(a TextVectorization or StringLookup layer in the data pipeline, say) and pass "
        f"the model that takes them. Received: {model} whose input {name!r} is {dtype}")
