"""Representative-dataset adapter: every kind of user data -> validated samples.

Accepted data (the conventions follow `model.fit`):

* a numpy array `[N, ...]` for one input, or a list of arrays for several
  (in the order of the specs, i.e. the TFLite graph's input order, which can
  differ from the Keras model's: prefer a dict for several inputs); for a
  one-input model a list of more arrays is read as a list of samples/batches;
* a tuple `(x, y)` or `(x, y, sample_weight)`: the labels are dropped (also
  when `x` is a dict or a list of arrays, and when `y` holds several outputs'
  targets, a dict by output name or a list, as `model.fit` takes them);
* a dict keyed by input name (arrays, or per-sample values in a stream);
* a `tf.data.Dataset`, batched or not (decided against the model's input rank);
* a `keras.utils.PyDataset`, any Python iterable or generator, or a zero-argument
  callable returning one (TFLite's own `representative_dataset` style).

Everything is split into single samples, cast to the model's input dtypes and
checked: wrong shapes or dtypes, a wrong number or names of inputs, NaN/Inf and
empty data raise a `ValueError` naming the sample and showing what was expected
and what was received.

Example:
    >>> converter.representative_dataset = tfq8.representative_dataset(
    ...     x_train, model=model, num_samples=200)
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from collections import abc
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from tfq8 import _args

_log = logging.getLogger("tfq8")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One model input: name, shape (None for unknown dims, batch first) and dtype.

    `position` is the input's index in the Keras model's own input order (for
    a float `.tflite`, in its signature's order), if known (specs are in the TFLite graph's order, which can differ); it lets
    the adapter accept a list of arrays in either order when the shapes tell
    them apart. It takes no part in comparisons.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype
    position: int | None = dataclasses.field(default=None, compare=False)

    def describe(self) -> str:
        dims = ", ".join("None" if d is None else str(d) for d in self.shape)
        return f"{self.name!r} of shape ({dims}) and dtype {np.dtype(self.dtype).name}"


class RepresentativeDataset:
    """Validated calibration samples, usable as TFLite's `representative_dataset`.

    Calling the object returns a generator yielding one sample per step as a
    list of arrays (batch dimension 1) in the model's input order, which is what
    `TFLiteConverter.representative_dataset` expects; for a model whose batch
    size is fixed at B > 1, batches of B (samples past the last full batch are
    left out).

    Attributes:
        inputs: One array per model input, all with the same first dimension.
        specs: The input specs the samples were checked against, if known.
        checked: True when `representative_dataset` made it, having checked the
            samples (shapes, dtypes, NaN/Inf); tfq8 checks one made otherwise
            again before using it.

    Raises:
        TypeError: If `inputs` is one array (it would be taken as one input per
            row), a dict, a string or a dataset, not a list (or tuple, or other
            iterable) of arrays.
        ValueError: If `inputs` holds no array, or arrays with different
            numbers of samples.

    Example:
        >>> rep = tfq8.RepresentativeDataset([x_train[:200]])  # one array per model input
        >>> converter.representative_dataset = rep           # one sample per step
        >>> calib = tfq8.calibrate(model, rep)                # checked against the model first
    """

    def __init__(self, inputs: Iterable[np.ndarray], specs: Sequence[InputSpec] | None = None):
        if _not_a_list_of_arrays(inputs):  # an array would be split into its rows
            raise TypeError(
                "inputs must be a list of arrays, one per model input, all with the samples "
                "on their first axis (one array: [x]; any other data: "
                "tfq8.representative_dataset(data, model=model)). Received: inputs of type "
                f"{type(inputs).__name__}")
        arrays = [np.asarray(a) for a in inputs]
        if not arrays or any(a.ndim == 0 for a in arrays) or len(
                {a.shape[0] for a in arrays}) != 1:
            raise ValueError(
                "inputs must be one or more arrays, one per model input, with the same number "
                "of samples on their first axis. Received: "
                + (", ".join(f"{a.dtype.name}{list(a.shape)}" for a in arrays) or "no arrays"))
        self.inputs = [np.ascontiguousarray(a) for a in arrays]
        self.specs = list(specs) if specs is not None else None
        self.checked = False

    def __len__(self) -> int:
        return int(self.inputs[0].shape[0])

    @property
    def batch(self) -> int:
        """Samples per step of `__call__`: the model's fixed batch size, else 1."""
        return (fixed_batch([s.shape for s in self.specs]) or 1) if self.specs else 1

    def __call__(self) -> Iterator[list[np.ndarray]]:
        step = self._one_batch_at_least()
        for i in range(0, len(self) - step + 1, step):
            yield [a[i : i + step] for a in self.inputs]

    def _one_batch_at_least(self) -> int:
        step = self.batch
        if len(self) < step:
            raise ValueError(f"data must hold at least one batch: the model's batch size is "
                             f"fixed at {step}. Received: {len(self)} sample(s)")
        return step

    def whole_batches(self) -> "RepresentativeDataset":
        """The samples that fill whole batches of the model's fixed batch size.

        Returns:
            `self` unless the model's batch size is fixed at B > 1 and the
            sample count is not a multiple of B; then the first multiple of B
            (logged).

        Raises:
            ValueError: If there are fewer samples than one batch.

        Example:
            >>> rep = tfq8.representative_dataset(x[:10], model=model_with_batch_size_4)
            >>> len(rep.whole_batches())   # the last 2 samples left out (logged at INFO)
            8
        """
        step = self._one_batch_at_least()
        if len(self) % step == 0:
            return self
        _log.info("The model's batch size is fixed at %d: the last %d of %d samples do not "
                  "fill a batch and are left out.", step, len(self) % step, len(self))
        return self.take(len(self) - len(self) % step)

    def batches(self, batch_size: int) -> Iterator[list[np.ndarray]]:
        """Yields lists of arrays with up to `batch_size` samples each.

        Raises:
            ValueError: Now, not at the first batch, unless `batch_size` is a positive integer.

        Example:
            >>> rep = tfq8.RepresentativeDataset([np.zeros((10, 4), np.float32)])
            >>> [len(b[0]) for b in rep.batches(4)]
            [4, 4, 2]
        """
        step = _args.integer("batch_size", batch_size)
        return ([a[start : start + step] for a in self.inputs]
                for start in range(0, len(self), step))

    def take(self, n: int) -> "RepresentativeDataset":
        """The first `n` samples (all of them if there are fewer).

        Raises:
            ValueError: Unless `n` is a positive integer (a negative one would drop
                samples from the end, as a slice does).

        Example:
            >>> rep = tfq8.representative_dataset(dataset, model=model)
            >>> converter.representative_dataset = rep.take(200)
        """
        _args.integer("n", n)
        first = RepresentativeDataset([a[:n] for a in self.inputs], self.specs)
        first.checked = self.checked
        return first

    def __repr__(self) -> str:
        shapes = ", ".join(f"{a.dtype.name}{list(a.shape)}" for a in self.inputs)
        return f"RepresentativeDataset({len(self)} samples: {shapes})"


def fixed_batch(signatures: Sequence[Sequence[int]]) -> int | None:
    """The batch size a model's inputs are fixed at, or None if it may be resized.

    Args:
        signatures: Each input's shape signature, batch first (-1 or None for
            a dimension that may change).

    Returns:
        None when every input's batch dimension is -1; else the fixed size
        (1 for scalar inputs, which have no batch dimension).

    Raises:
        ValueError: If the inputs' fixed batch sizes differ.

    Example:
        >>> fixed_batch([(4, 8, 8, 1)]), fixed_batch([(-1, 8)])
        (4, None)
    """
    dims = [-1 if len(s) and s[0] is None else int(s[0]) if len(s) else 1 for s in signatures]
    if all(d == -1 for d in dims):
        return None
    sizes = sorted({d for d in dims if d != -1})
    if len(sizes) > 1:
        raise ValueError(f"The model's inputs must share one batch size. Received batch "
                         f"dimensions {dims}")
    return sizes[0]


def short_name(tensor_name: str) -> str:
    """A TFLite input or output tensor's name as users know it: without the
    `serving_default_` prefix of a SavedModel signature and the `:0` suffix.

    Example:
        >>> short_name("serving_default_image:0")
        'image'
    """
    return tensor_name.removeprefix("serving_default_").split(":")[0]


def representative_dataset(
    data: Any,
    *,
    model: Any = None,
    specs: Sequence[InputSpec] | None = None,
    num_samples: int | None = None,
) -> RepresentativeDataset:
    """Adapts calibration data of any common kind for TFLite and tfq8.

    Args:
        data: Numpy arrays, `(x, y[, w])` tuples, dicts keyed by input name,
            a `tf.data.Dataset`, a `keras.utils.PyDataset`, an iterable or
            generator, or a zero-argument callable returning one.
        model: Optional Keras model (or anything `tfq8` accepts as a model);
            its input names, shapes and dtypes are used to order, cast and
            check the data. Without it, streams are taken as batched, like
            `model.fit` does.
        specs: Input specs to use instead of `model`'s.
        num_samples: Use at most this many samples (default: all).

    Returns:
        A `RepresentativeDataset`; assign it to
        `converter.representative_dataset` or pass it to `tfq8.calibrate`.

    Raises:
        ValueError: On empty data, a wrong number or names of inputs, wrong
            shapes, non-numeric dtypes or NaN/Inf values.
        TypeError: If `data` is of a kind that cannot be read.

    Example:
        >>> rep = tfq8.representative_dataset((x_train, y_train), model=model,
        ...                                   num_samples=200)
        >>> len(rep)
        200
    """
    _args.integer("num_samples", num_samples, optional=True)
    if specs is not None and (not isinstance(specs, (list, tuple)) or not all(
            isinstance(s, InputSpec) for s in specs)):
        raise TypeError("specs must be a list of tfq8.data.InputSpec (or pass model= instead). "
                        f"Received: specs={specs!r}")
    if specs is None and model is not None:
        from tfq8 import models  # local: models imports TensorFlow

        specs = models.input_specs(model)
    if isinstance(data, RepresentativeDataset):
        names = [s.name for s in data.specs] if data.specs else []
        if specs and len(names) > 1 and sorted(names) == sorted(s.name for s in specs):
            data = dict(zip(names, data.inputs))  # by name: no order ambiguity
        else:
            data = list(data.inputs)
    builder = _Builder(specs, num_samples)
    builder.consume(data)
    return builder.finish()


# --------------------------------------------------------------------- internals
# An iterator without num_samples that yields more than this is warned about (and
# again at each tenfold): it may never end, and every sample is kept.
UNSIZED_WARNING_SAMPLES = 10_000
# ... and refused past this many bytes of samples (num_samples lifts the cap).
UNSIZED_MAX_BYTES = 1 << 30
# A stream that yields this many empty batches in a row is refused (endless, it would hang).
EMPTY_BATCHES_MAX = 1000


def check_kind(data: Any, arg: str = "data") -> None:
    """Refuses, without reading anything, data of a kind no adapter reads.

    Args:
        data: What the caller passed as samples.
        arg: The argument's name, for the message.

    Raises:
        ValueError: If `data` is None.
        TypeError: If `data` is a file name, or neither array-like, iterable nor callable
            (a number, say).

    Example:
        >>> check_kind("calib.npy", "calibration_data")
        Traceback (most recent call last):
        ...
        TypeError: calibration_data must be samples (...), not a file name: ...
    """
    if data is None:
        raise ValueError(f"{arg} must not be None. Received: {arg}=None")
    if isinstance(data, (str, bytes, os.PathLike)):
        raise TypeError(
            f"{arg} must be samples (numpy arrays, (x, y) pairs, a dict, a tf.data.Dataset, "
            f"...), not a file name: load the file first, such as {arg}=np.load(path). "
            f"Received: {arg}={data!r}")
    readable = hasattr(data, "__iter__") or hasattr(data, "__getitem__") or _is_tensor(data)
    if not (callable(data) or readable):
        raise TypeError(
            f"{arg} must be numpy arrays, (x, y) pairs, a dict, a tf.data.Dataset, a "
            f"keras.utils.PyDataset, an iterable or a callable. Received: {type(data).__name__}")
    if callable(data) and not readable:  # called with no arguments to get the samples
        try:
            signature = inspect.signature(data)
        except (TypeError, ValueError):  # a builtin without one
            return
        try:
            signature.bind()
        except TypeError:
            raise TypeError(
                f"{arg} as a function must take no arguments: it is called once to get the "
                "samples, as TFLiteConverter.representative_dataset is. Received: "
                f"{getattr(data, '__qualname__', type(data).__name__)}{signature}") from None


def pydataset_batches(data: Any, arg: str) -> int | None:
    """How many batches a `keras.utils.PyDataset` (or tf_keras `Sequence`) holds;
    None for an endless one (Keras 3's `num_batches` is None).

    Raises:
        TypeError: Naming `arg`, if it has neither `num_batches` nor `__len__`.
    """
    try:
        return data.num_batches if hasattr(type(data), "num_batches") else len(data)
    except (NotImplementedError, TypeError):
        raise TypeError(f"{arg} is a keras.utils.PyDataset with neither num_batches nor "
                        f"__len__. Received: {type(data).__name__}") from None


class StreamBudget:
    """Refuses a stream with no known end once it has yielded `UNSIZED_MAX_BYTES`.

    Every sample read is kept in memory, so an endless generator (or a
    `tf.data.Dataset` of unknown cardinality) read without a cap would fill it.

    Example:
        >>> budget = StreamBudget("data", generator, "num_samples=<samples>",
        ...                       "num_samples=None", endless=True)
        >>> budget.add(samples=32, nbytes=4096)   # raises past the cap
    """

    def __init__(self, arg: str, source: Any, remedy: str, received: str, *, endless: bool):
        self.arg, self.kind, self.remedy, self.received = arg, type(source).__name__, remedy, received
        self.endless = endless
        self.samples = self.nbytes = self.items = 0

    def add(self, *, samples: int, nbytes: int) -> None:
        """Counts one item read; raises a ValueError past the cap."""
        if not self.endless:
            return
        self.samples += samples
        self.nbytes += nbytes
        self.items += 1
        if self.nbytes > UNSIZED_MAX_BYTES:
            raise ValueError(
                f"{self.arg} is a {self.kind} with no known end and has yielded {self.samples} "
                f"samples ({self.nbytes >> 20} MiB) in {self.items} items without ending; "
                "tfq8 keeps every sample in memory, so it reads at most "
                f"{UNSIZED_MAX_BYTES >> 20} MiB of such a stream. Expected a finite stream, "
                f"or {self.remedy}. Received: {self.received}")


class EmptyRun:
    """Refuses a stream once it yields `EMPTY_BATCHES_MAX` items in a row with no sample:
    an endless stream of empty batches would otherwise be read forever.

    Example:
        >>> run = EmptyRun("data")
        >>> run.add(samples=0, shapes=[(0, 8)])   # raises at the 1000th in a row
    """

    def __init__(self, arg: str):
        self.arg, self.count = arg, 0

    def add(self, *, samples: int, shapes: list[tuple[int, ...]], after: str = "") -> None:
        """Counts one item of `samples` samples (arrays of `shapes`)."""
        self.count = 0 if samples else self.count + 1
        if self.count >= EMPTY_BATCHES_MAX:
            raise ValueError(
                f"{self.arg} yielded {self.count} empty batches in a row (0 samples each)"
                f"{after}: expected batches holding samples. Received: batches of shapes "
                f"{shapes}")


class _Builder:
    """Collects samples from any source, checking each against the specs."""

    def __init__(self, specs: Sequence[InputSpec] | None, num_samples: int | None,
                 keep_labels: bool = False):
        self.specs = list(specs) if specs else None
        self.limit = num_samples
        self.chunks: list[list[np.ndarray]] = []
        self.count = 0
        self.nbytes = 0  # of the samples in chunks
        self._empty_run = EmptyRun("data")
        self._dataset = False  # the data is a tf.data.Dataset
        self.one_shot = False  # the data was a generator or iterator (consumed by reading)
        self._one_sample = False  # the item being added came without its batch dimension
        # The y of (x, y[, w]) items, per chunk (a dict for several outputs'); None once an
        # item has none.
        self.label_chunks: list[np.ndarray] | None = [] if keep_labels else None
        # The current item's y, if labels are kept: an array, or a dict by output name or
        # index for several outputs' targets.
        self._label: np.ndarray | dict | None = None
        self._warned_order = False
        # Graph input i is the Keras model's input keras_order[i].
        self.keras_order = None
        if self.specs and len(self.specs) > 1:
            order = [s.position for s in self.specs]
            if (None not in order and sorted(order) == list(range(len(order)))
                    and order != sorted(order)):
                self.keras_order = order

    @property
    def full(self) -> bool:
        return self.limit is not None and self.count >= self.limit

    # ---- source kinds
    def consume(self, data: Any) -> None:
        check_kind(data)
        tf = _tf_or_none()
        if tf is not None and isinstance(data, tf.data.Dataset):
            return self._consume_dataset(data)
        if _is_pydataset(data):
            count = pydataset_batches(data, "data")
            if count is None and self.limit is None:
                raise ValueError("data is a keras.utils.PyDataset without an end (num_batches "
                                 "is None): pass num_samples to take that many samples. "
                                 "Received: num_samples=None")
            i = 0
            while (count is None or i < count) and not self.full:
                self._add_item(data[i])
                i += 1
            return None
        if callable(data) and not _is_array_like(data) and not isinstance(data, dict):
            return self.consume(data())
        if isinstance(data, (np.ndarray, dict)) or _is_tensor(data):
            return self._add(self._structure(data))
        if isinstance(data, list) and _is_nested_numbers(data):
            return self._add(self._structure(_to_numpy(data, "data")))
        if isinstance(data, (list, tuple)) and data and all(_is_array_like(d) for d in data):
            if not (isinstance(data, list) and self.specs and len(data) != len(self.specs)
                    and len(self.specs) == 1):
                return self._add(self._structure(data))
            # else: a list of samples (or batches) for a one-input model: a stream.
        if _is_xy(data, self._looks_like_inputs):
            # ([x1, x2], y), ({"a": xa, "b": xb}, y, w), (x, [0, 1, ...]) or, for several
            # outputs, (x, {"cls": y1, "reg": y2}): model.fit's (x, y[, w]), not a stream of
            # two or three samples.
            return self._add(self._structure(data))
        if isinstance(data, (list, tuple)) and not data:
            raise ValueError("data is empty: expected at least one sample. Received: an empty sequence")
        try:
            iterator = iter(data)
        except TypeError:
            raise TypeError(
                "data must be numpy arrays, (x, y) pairs, a dict, a tf.data.Dataset, a "
                f"keras.utils.PyDataset, an iterable or a callable. Received: {type(data).__name__}"
            ) from None
        warn_at = UNSIZED_WARNING_SAMPLES if not hasattr(data, "__len__") else float("inf")
        self.one_shot = iterator is data  # a generator or iterator: it yields only once
        self._read(iterator, self._budget(data, endless=not hasattr(data, "__len__")),
                   warn_at=warn_at)
        return None

    def _consume_dataset(self, ds) -> None:
        tf = _tf_or_none()
        self._dataset = True
        if ds.cardinality() == tf.data.INFINITE_CARDINALITY and self.limit is None:
            raise ValueError(
                "data is an infinite tf.data.Dataset: pass num_samples to say how many "
                "samples to calibrate with. Received: num_samples=None"
            )
        self._read(ds.as_numpy_iterator(),
                   self._budget(ds, endless=ds.cardinality() == tf.data.UNKNOWN_CARDINALITY))

    def _read(self, items: Iterator[Any], budget: StreamBudget, *,
              warn_at: float = float("inf")) -> None:
        """Adds the items of a stream until `num_samples` are read, within `budget`;
        warns past `warn_at` samples (and each tenfold) when nothing caps them."""
        for item in items:
            if self.full:
                break
            before, size_before = self.count, self.nbytes
            self._add_item(item)
            if self.limit is None and self.count >= warn_at:  # an endless generator?
                _log.warning(
                    "Read %d samples from data, an iterator of unknown length, and still "
                    "reading: every sample is kept in memory. Pass num_samples to cap it (a "
                    "few hundred samples calibrate well).", self.count)
                warn_at *= 10
            budget.add(samples=self.count - before, nbytes=self.nbytes - size_before)

    def _add_item(self, item: Any) -> None:
        """Adds one item of a stream; refuses a run of `EMPTY_BATCHES_MAX` empty ones."""
        before = self.count
        arrays = self._structure(item)
        self._add(arrays)
        self._empty_run.add(samples=self.count - before, shapes=[a.shape for a in arrays],
                            after=f" after {self.count} sample(s)")

    def _budget(self, source: Any, *, endless: bool) -> StreamBudget:
        """The memory cap for `source` (none once num_samples caps the samples)."""
        return StreamBudget("data", source, "num_samples=<samples> (a few hundred calibrate "
                            "well)", "num_samples=None", endless=endless and self.limit is None)

    # ---- structure: -> list of arrays in input order
    def _structure(self, item: Any) -> list[np.ndarray]:
        n_inputs = len(self.specs) if self.specs else None
        self._label = None
        if isinstance(item, tuple) and 2 <= len(item) <= 3 and not (
            n_inputs == len(item) and self._matches_specs(item, either_order=True)
        ):
            item, y = item[0], item[1]  # (x, y) or (x, y, sample_weight)
            if self.label_chunks is not None:
                self._label = _label_array(y)
        if isinstance(item, tuple) and len(item) == 1:
            item = item[0]
        if isinstance(item, dict):
            return self._from_dict(item)
        if isinstance(item, (list, tuple)):
            arrays = [_to_numpy(a, f"input {i}") for i, a in enumerate(item)]
            arrays = self._positional_order(arrays)
        else:
            arrays = [_to_numpy(item, "input 0")]
        if n_inputs is not None and len(arrays) != n_inputs:
            raise ValueError(
                f"Sample {self.count}: the model has {n_inputs} input(s) "
                f"({', '.join(s.name for s in self.specs)}). Received {len(arrays)} array(s)."
            )
        return arrays

    def _positional_order(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Arrays of a list in the graph's order, also if given in Keras' order.

        Lists are taken in the specs' (TFLite graph's) order, as TFLite's own
        representative_dataset expects. Where the Keras model orders its inputs
        differently (model.fit's convention) and only that order fits the
        shapes, the list is reordered; if both fit, the graph's order is kept
        and a warning suggests a dict.
        """
        if self.keras_order is None or len(arrays) != len(self.specs):
            return arrays
        as_keras = [arrays[k] for k in self.keras_order]
        fits_graph, fits_keras = self._matches_specs(arrays), self._matches_specs(as_keras)
        if fits_keras and not fits_graph:
            return as_keras
        if fits_keras and fits_graph and not self._warned_order:
            self._warned_order = True
            _log.warning(
                "A list of arrays for inputs %s is taken in the TFLite graph's order %s, "
                "not the model's own order %s (the Keras model's, or a .tflite's signature's). "
                "Pass a dict keyed by input name to be "
                "unambiguous.", [s.name for s in self.specs], [s.name for s in self.specs],
                [self.specs[self.keras_order.index(k)].name for k in range(len(self.specs))])
        return arrays

    def _looks_like_inputs(self, item: Any) -> bool | None:
        """Whether `item` (a dict or a list of arrays) could be a batch of the model's
        inputs; None when the inputs are unknown."""
        if not self.specs:
            return None
        if isinstance(item, dict):
            return sorted(map(str, item)) == sorted(s.name for s in self.specs)
        return len(item) == len(self.specs) and self._matches_specs(item, either_order=True)

    def _matches_specs(self, item: tuple, either_order: bool = False) -> bool:
        if either_order and self.keras_order is not None and len(item) == len(self.specs):
            if self._matches_specs([item[k] for k in self.keras_order]):
                return True
        try:
            arrays = [np.asarray(a) for a in item]
        except Exception:  # noqa: BLE001 - not array-like: not inputs
            return False
        for a, spec in zip(arrays, self.specs):
            if a.ndim not in (len(spec.shape), len(spec.shape) - 1):
                return False
            sample = spec.shape[1:]  # not the batch size, which may be fixed (at 1, say)
            if any(d is not None and d != s
                   for d, s in zip(sample, a.shape[a.ndim - len(sample):])):
                return False
        return True

    def _from_dict(self, item: dict) -> list[np.ndarray]:
        if self.specs is None:
            keys = sorted(item)
            if len(keys) == 1:
                return [_to_numpy(item[keys[0]], repr(keys[0]))]
            raise ValueError(
                "data is a dict with several keys but the model's input names are unknown: "
                f"pass model= or a list of arrays. Received keys: {keys}"
            )
        names = [s.name for s in self.specs]
        missing = [n for n in names if n not in item]
        extra = [k for k in item if k not in names]
        if missing or extra:
            raise ValueError(
                f"Sample {self.count}: dict keys must be the model's input names {names}. "
                f"Received keys: {sorted(map(str, item))}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unexpected {extra})" if extra else "")
            )
        return [_to_numpy(item[n], repr(n)) for n in names]

    # ---- batching, casting, checking
    def _add(self, arrays: list[np.ndarray]) -> None:
        if self.specs is not None:
            ranks = [len(s.shape) for s in self.specs]
            # One sample without the batch dimension is unambiguous given the ranks.
            is_sample = [a.ndim == r - 1 for a, r in zip(arrays, ranks)]
            if any(is_sample) and not all(is_sample):
                raise ValueError(
                    f"Sample {self.count}: inputs mix batched and unbatched arrays. "
                    f"Received shapes {[a.shape for a in arrays]}"
                )
            self._one_sample = all(is_sample)
            if all(is_sample):
                arrays = [a[None] for a in arrays]
                if isinstance(self._label, dict):
                    self._label = {k: v[None] for k, v in self._label.items()}
                elif self._label is not None:
                    self._label = self._label[None]
            for a, spec in zip(arrays, self.specs):
                if a.ndim != len(spec.shape):
                    raise ValueError(
                        f"Sample {self.count}: expected input {spec.describe()} "
                        f"(a batch, or one sample without the batch dimension). "
                        f"Received shape {a.shape}"
                    )
        elif any(a.ndim == 0 for a in arrays):
            raise ValueError(
                f"Sample {self.count}: expected arrays with a batch dimension. "
                f"Received shapes {[a.shape for a in arrays]}"
            )
        sizes = {int(a.shape[0]) for a in arrays}
        if len(sizes) != 1:
            raise ValueError(
                f"Sample {self.count}: all inputs need the same number of samples. "
                f"Received batch sizes {[a.shape[0] for a in arrays]}"
            )
        size = given = sizes.pop()
        if self.limit is not None:
            take = min(size, self.limit - self.count)
            arrays = [a[:take] for a in arrays]
            size = take
        if size == 0:
            return
        arrays = [self._check(a, i) for i, a in enumerate(arrays)]
        if self.chunks:  # with specs, only dynamic dimensions (height, width) can differ
            first = self.chunks[0]
            if len(first) != len(arrays) or any(
                f.shape[1:] != a.shape[1:] for f, a in zip(first, arrays)
            ):
                raise ValueError(
                    f"Sample {self.count}: every sample must have the same structure as "
                    f"the first, shapes {[f.shape[1:] for f in first]} (a model with dynamic "
                    "sizes is calibrated at one size: resize the samples to it). "
                    f"Received {[a.shape[1:] for a in arrays]}"
                )
        self.chunks.append(arrays)
        self._keep_label(size, given)
        self.count += size
        self.nbytes += sum(a.nbytes for a in arrays)

    def _check(self, a: np.ndarray, i: int) -> np.ndarray:
        spec = self.specs[i] if self.specs else None
        name = spec.name if spec else f"input {i}"
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise ValueError(
                f"Sample {self.count}: input {name!r} must be numeric"
                + (f" ({np.dtype(spec.dtype).name})" if spec else "")
                + f". Received dtype {a.dtype}"
            )
        if np.issubdtype(a.dtype, np.complexfloating):
            raise ValueError(f"Sample {self.count}: input {name!r} must be real. Received dtype {a.dtype}")
        if np.issubdtype(a.dtype, np.floating):
            finite = np.isfinite(a.reshape(len(a), -1)).all(axis=1)
            if not finite.all():
                bad = self.count + int(np.flatnonzero(~finite)[0])
                raise ValueError(
                    f"Sample {bad}: input {name!r} contains NaN or Inf. "
                    "Expected finite values."
                )
        if spec is not None:
            for axis, (want, got) in enumerate(zip(spec.shape[1:], a.shape[1:]), start=1):
                if want is not None and want != got:
                    received = (f"shape {a.shape[1:]} (its axis {axis - 1} is {got}, not "
                                f"{want}), read as one sample: it has the rank of one sample, "
                                "so if it is a batch, an axis is missing (such as the channel "
                                "axis: x[..., None])" if self._one_sample else
                                f"shape {(None,) + a.shape[1:]} (axis {axis} is {got}, not {want})")
                    raise ValueError(
                        f"Sample {self.count}: expected input {spec.describe()}. "
                        f"Received {received}")
            target = np.dtype(spec.dtype)
            if np.issubdtype(target, np.integer) and np.issubdtype(a.dtype, np.floating):
                if not np.array_equal(a, np.round(a)):
                    raise ValueError(
                        f"Sample {self.count}: input {name!r} has integer dtype {target.name}. "
                        f"Received non-integral {a.dtype} values"
                    )
        elif np.issubdtype(a.dtype, np.floating):
            target = np.dtype(np.float32)
        else:
            return a
        self._check_fits(a, target, name)
        return a.astype(target, copy=False)

    def _check_fits(self, a: np.ndarray, target: np.dtype, name: str) -> None:
        """Refuses values the cast to `target` would wrap or overflow to Inf.

        Bounds are compared exactly: integers against integers, floats in
        float64 against the first value past the target's range (2**31 for
        int32, whose largest value a float32 cannot hold).
        """
        if a.dtype == target or a.size == 0 or a.dtype == np.bool_:
            return
        flat = a.reshape(len(a), -1)
        low, high = flat.min(axis=1), flat.max(axis=1)
        if np.issubdtype(target, np.integer):
            lo, hi = int(np.iinfo(target).min), int(np.iinfo(target).max)
            if np.issubdtype(a.dtype, np.floating):
                low64, high64 = low.astype(np.float64), high.astype(np.float64)
                bad = (low64 < float(lo)) | (high64 >= float(hi) + 1.0)  # 2**31, 2**63 exact
            else:
                bad = np.array([int(x) < lo or int(y) > hi for x, y in zip(low, high)])
        elif np.issubdtype(target, np.floating):
            lo, hi = -float(np.finfo(target).max), float(np.finfo(target).max)
            with np.errstate(over="ignore"):
                bad = ~(np.isfinite(low.astype(target)) & np.isfinite(high.astype(target)))
        else:
            return
        k = np.flatnonzero(bad)
        if len(k):
            k = int(k[0])
            raise ValueError(
                f"Sample {self.count + k}: input {name!r} is {target.name}, which holds "
                f"values in [{_num(lo)}, {_num(hi)}]. Received {a.dtype} values in "
                f"[{_num(low[k])}, {_num(high[k])}]")

    def _keep_label(self, size: int, given: int) -> None:
        """Keeps the labels of the chunk just added: the first `size` of its `given` samples."""
        if self.label_chunks is None:
            return
        y = self._label
        if isinstance(y, dict) and list(y) == list(range(len(y))) and len(y) == given:
            if any(len(v) != given for v in y.values() if v.ndim):
                try:  # a list of one label (or one-hot row) per sample, not several outputs'
                    y = np.stack(list(y.values()))
                except ValueError:
                    y = None
            elif not self._dataset and given > 1 and all(v.ndim for v in y.values()) and len(
                    {v.shape for v in y.values()}) == 1:
                # As many equal arrays as samples, each as long: one-hot rows of as many
                # classes, or several outputs' targets; the other items tell which (a
                # tf.data.Dataset batches one-hot rows into one array: its are outputs').
                self.label_chunks.append(_Undecided(y, size))
                return
        parts = y if isinstance(y, dict) else {None: y}
        if y is None or any(v.ndim == 0 for v in parts.values()):
            self.label_chunks = None  # an item without labels: no labels
            return
        for key, v in parts.items():
            if len(v) != given:
                raise ValueError(
                    f"Sample {self.count}: labels must have one entry per sample; an (x, y) "
                    f"item with {given} sample(s) needs as many. Received y"
                    f"{'' if key is None else f'[{key!r}]'} of shape {v.shape}")
        self.label_chunks.append({k: v[:size] for k, v in y.items()} if isinstance(y, dict)
                                 else y[:size])

    def labels(self) -> np.ndarray | dict | None:
        """The labels of every sample, if every item came as (x, y[, w]): an array, or for
        several outputs' targets a dict by output name (or index, for a list of them)."""
        if not self.label_chunks:
            return None
        chunks = self.label_chunks
        decided = [c for c in chunks if not isinstance(c, _Undecided)]
        if len(decided) < len(chunks):
            if not decided:  # every item's y could be either
                return None
            rows = not isinstance(decided[0], dict)
            chunks = [c.resolve(rows) if isinstance(c, _Undecided) else c for c in chunks]
        try:
            if all(isinstance(c, dict) for c in chunks):
                if any(c.keys() != chunks[0].keys() for c in chunks):
                    return None
                return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
            if any(isinstance(c, dict) for c in chunks):
                return None
            return np.concatenate(chunks)
        except ValueError:  # labels of differing shapes
            return None

    def finish(self) -> RepresentativeDataset:
        if self.count == 0:
            raise ValueError(
                "data is empty: expected at least one sample. Received: 0 samples"
                + (" (a generator or iterator yields its items once; if it was used before, "
                   "pass a function that returns a new one, a list or a tf.data.Dataset)"
                   if self.one_shot else ""))
        if self.limit is not None and self.count < self.limit:
            _log.info("Calibration data has %d samples (num_samples=%d).", self.count, self.limit)
        inputs = [np.concatenate(parts, axis=0) for parts in zip(*self.chunks)]
        rep = RepresentativeDataset(inputs, self.specs)
        rep.checked = True
        return rep


@dataclasses.dataclass
class _Undecided:
    """The labels of an item whose y, a list of `size` arrays of `size` entries each, are
    one-hot rows (one per sample) or several outputs' targets: decided by the other items."""

    y: dict
    size: int

    def resolve(self, rows: bool) -> np.ndarray | dict:
        if rows:
            return np.stack(list(self.y.values()))[:self.size]
        return {k: v[:self.size] for k, v in self.y.items()}


def labelled_samples(data: Any, *, specs: Sequence[InputSpec] | None = None,
                     num_samples: int | None = None
                     ) -> tuple[RepresentativeDataset, np.ndarray | dict | None]:
    """`representative_dataset`, keeping the labels of `(x, y[, w])` data.

    Returns:
        (samples, labels): labels has one entry per sample, or is None unless
        every item of `data` carried labels; several outputs' (a dict or a list
        of arrays as y) come as a dict by output name (or list index).

    Example:
        >>> rep, y = labelled_samples(test_ds, specs=specs)   # a tf.data of (x, y)
    """
    _args.integer("num_samples", num_samples, optional=True)
    builder = _Builder(specs, num_samples, keep_labels=True)
    builder.consume(data)
    return builder.finish(), builder.labels()


def _label_array(y: Any) -> np.ndarray | dict | None:
    """One output's labels as an array; several outputs' (a dict, or a list of arrays) as a
    dict by output name or index; None for none."""
    if isinstance(y, dict) or (isinstance(y, (list, tuple)) and y
                               and not _is_nested_numbers(list(y))):
        parts = {k: _label_array(v) for k, v in (y.items() if isinstance(y, dict)
                                                  else enumerate(y))}
        ok = parts and all(isinstance(v, np.ndarray) for v in parts.values())
        return parts if ok else None
    if y is None or isinstance(y, (list, tuple)) and not y:
        return None
    try:
        return np.asarray(y.numpy() if _is_tensor(y) else y)
    except (TypeError, ValueError):
        return None


def _is_xy(data: Any, looks_like_inputs: Callable[[Any], bool | None] | None = None) -> bool:
    """True for `(x, y)` / `(x, y, w)` tuples as `model.fit` takes them: `x` an array, a
    dict or a list of arrays; `y` and `w` arrays or Python lists of numbers, or, for a
    model with several outputs, a dict or a list of them, unless `looks_like_inputs(y)`
    says they could be a batch of inputs (then `data` is a stream of batches), or they are
    of the same kind as an `x` that could not be inputs either (a stream of `(x, y)` items,
    say). Where the inputs are unknown (None), such a `y` of the same kind as `x` makes a
    stream."""
    if not (isinstance(data, tuple) and 2 <= len(data) <= 3):
        return False
    x = data[0]
    if isinstance(x, dict):
        x_ok = bool(x) and all(_is_array_like(v) for v in x.values())
    elif isinstance(x, (list, tuple)):
        x_ok = bool(x) and all(_is_array_like(v) for v in x)
    else:
        x_ok = _is_array_like(x)

    def kind(v: Any) -> type:
        return dict if isinstance(v, dict) else list if isinstance(v, (list, tuple)) else object

    def one(d: Any) -> bool:
        return _is_array_like(d) or (isinstance(d, list) and _is_nested_numbers(d))

    def several(d: Any) -> bool:  # several outputs' targets
        parts = list(d.values()) if isinstance(d, dict) else list(d) if isinstance(
            d, (list, tuple)) else []
        if not parts or not all(one(v) for v in parts):
            return False
        guess = looks_like_inputs(d) if looks_like_inputs is not None else None
        if guess is None:
            return kind(d) is not kind(x)
        # Items of one kind of which x cannot be inputs either, such as ((x0, y0), (x1, y1)),
        # are a stream of items.
        return not guess and not (kind(d) is kind(x) and looks_like_inputs(x) is False)

    return x_ok and all(d is None or one(d) or several(d) for d in data[1:])


def _num(v: Any) -> str:
    """A bound or value for a message: integers in full, floats short."""
    return str(int(v)) if float(v).is_integer() and abs(float(v)) < 1e16 else f"{float(v):g}"


def _is_nested_numbers(data: list) -> bool:
    """True for a (nested) Python list of numbers (numpy's scalars too), such as [[0.1, 0.2]]."""
    stack = list(data)
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, float, np.number)):
            return False
    return bool(data)


def _tf_or_none():
    try:
        import tensorflow as tf  # noqa: PLC0415

        return tf
    except ImportError:  # pragma: no cover - TensorFlow is a dependency
        return None


def _is_tensor(x: Any) -> bool:
    tf = _tf_or_none()
    return tf is not None and (tf.is_tensor(x))


def _is_array_like(x: Any) -> bool:
    return isinstance(x, (np.ndarray, np.generic)) or _is_tensor(x)


def _not_a_list_of_arrays(inputs: Any) -> bool:
    """Whether `RepresentativeDataset(inputs)` must refuse `inputs`: one array or tensor
    (iterating it gives its rows), a mapping (its keys), text or a `tf.data.Dataset`
    (its elements); any other iterable gives the arrays, one per model input."""
    if _is_array_like(inputs) or hasattr(inputs, "__array__") or isinstance(
            inputs, (str, bytes, abc.Mapping)) or not isinstance(inputs, abc.Iterable):
        return True
    tf = _tf_or_none()
    return tf is not None and isinstance(inputs, tf.data.Dataset)


def _is_pydataset(x: Any) -> bool:
    for mod in ("keras", "tf_keras"):
        try:
            utils = __import__(mod).utils
            cls = getattr(utils, "PyDataset", None) or getattr(utils, "Sequence", None)
        except (ImportError, AttributeError):
            continue
        if cls is not None and isinstance(x, cls):
            return True
    return False


def _to_numpy(x: Any, what: str) -> np.ndarray:
    if _is_tensor(x):
        kind = type(x).__name__
        if kind in ("RaggedTensor", "SparseTensor"):
            fix = "x.to_tensor()" if kind == "RaggedTensor" else "tf.sparse.to_dense(x)"
            raise TypeError(f"{what} must be dense arrays of one shape per input. Received: a "
                            f"tf.{kind}; pad or densify it first ({fix})")
        x = x.numpy()
    try:
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001
        why = (" (nested lists of different lengths: samples of different shapes, which "
               "one array cannot hold; pad them to one shape)" if isinstance(x, list) else "")
        raise TypeError(f"{what} could not be read as an array{why}. Received: "
                        f"{type(x).__name__}") from e

