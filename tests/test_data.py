"""The representative-dataset adapter on every input kind and every bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

import factories
import keras
import tfq8
from tfq8 import models
from tfq8.data import InputSpec, RepresentativeDataset, representative_dataset

N = 10
SPEC = [InputSpec("x", (None, 4), np.dtype(np.float32))]
X = np.arange(N * 4, dtype=np.float64).reshape(N, 4) / 7.0


def rd(data, **kw):
    kw.setdefault("specs", SPEC)
    return representative_dataset(data, **kw)


def _check_x(rep: RepresentativeDataset, n: int = N) -> None:
    assert isinstance(rep, RepresentativeDataset) and len(rep) == n
    assert len(rep.inputs) == 1 and rep.inputs[0].dtype == np.float32
    np.testing.assert_array_equal(rep.inputs[0], X[:n].astype(np.float32))


@pytest.fixture(scope="module")
def two_in():
    model = factories.two_in_two_out()
    return model, models.input_specs(model), factories.two_in_data(N)


def _check_two(rep, data, n=N):
    assert [s.name for s in rep.specs] == ["b", "a"]  # the TFLite graph's order
    assert len(rep) == n
    np.testing.assert_array_equal(rep.inputs[0], data["b"][:n])
    np.testing.assert_array_equal(rep.inputs[1], data["a"][:n])


# ------------------------------------------------------------- input kinds
def test_numpy_array_cast_to_input_dtype():
    _check_x(rd(X))
    _check_x(rd(tf.constant(X)))


def test_xy_and_xyw_tuples_drop_labels():
    y, w = np.arange(N), np.ones(N)
    _check_x(rd((X, y)))
    _check_x(rd((X, y, w)))
    _check_x(rd((X, X)))  # labels shaped like the inputs are still labels
    _check_x(rd((X, list(range(N)))))  # labels as a Python list, as model.fit takes them
    _check_x(rd((X, list(range(N)), [1.0] * N)))


def test_xy_with_several_outputs_targets_as_model_fit_takes_them(two_in):
    # model.fit(x, {"cls": y1, "reg": y2}) and model.fit(x, [y1, y2]): the y of a
    # model with several outputs, not more samples.
    y, r = np.arange(N), np.ones((N, 1))
    for targets in ({"cls": y, "reg": r}, [y, r], (y, r), {"cls": list(range(N))}):
        _check_x(rd((X, targets)))
        _check_x(rd((X, targets, np.ones(N))))
        _check_x(rd((X, targets), specs=None))
    _, specs, data = two_in
    for targets in ({"cls": y, "reg": r}, [y, r]):
        _check_two(rd((data, targets), specs=specs), data)
        _check_two(rd(([data["b"], data["a"]], targets), specs=specs), data)
    # Two batches of inputs stay a stream of two.
    twice = {n: np.concatenate([a, a]) for n, a in data.items()}
    _check_two(rd((data, data), specs=specs), twice, n=2 * N)
    _check_two(rd(([data["b"], data["a"]], [data["b"], data["a"]]), specs=specs), twice, n=2 * N)


def test_a_tuple_of_xy_items_stays_a_stream():
    # ((x0, y0), (x1, y1)) for a one-input model: two (x, y) items, as before several
    # outputs' targets were read; not x = [x0, y0] with y = (x1, y1).
    from tfq8.data import labelled_samples  # noqa: PLC0415

    y = np.arange(N) % 3
    for items in (((X[0], y[0]), (X[1], y[1])), ((X[:5], y[:5]), (X[5:], y[5:])),
                  ((X[:3], y[:3]), (X[3:6], y[3:6]), (X[6:], y[6:]))):
        n = sum(len(np.atleast_2d(x)) for x, _ in items)
        _check_x(rd(items), n=n)
        rep, labels = labelled_samples(items, specs=SPEC)
        _check_x(rep, n=n)
        np.testing.assert_array_equal(labels, y[:n])


def test_a_list_of_one_hot_rows_as_long_as_the_batch_is_not_several_outputs():
    # y = [row0, row1, row2] for 3 samples of 3 classes could be 3 outputs' targets: read as
    # such, check() scored row0 as the first output's labels (a wrong accuracy, no word).
    from tfq8.data import labelled_samples  # noqa: PLC0415

    y = np.eye(3, dtype=np.float32)[np.arange(N) % 3]

    def batches(stop):
        return lambda: ((X[i:min(i + 3, stop)], list(y[i:min(i + 3, stop)]))
                        for i in range(0, stop, 3))

    rep, labels = labelled_samples(batches(9), specs=SPEC)  # only batches of 3: no telling
    _check_x(rep, n=9)
    assert labels is None
    rep, labels = labelled_samples(batches(N), specs=SPEC)  # the last, of 1 sample, tells
    _check_x(rep)
    np.testing.assert_array_equal(labels, y)
    # A tf.data.Dataset batches one-hot rows into one array: its tuple y are outputs'.
    ds = tf.data.Dataset.from_tensor_slices((X, (np.arange(N), 2 * np.arange(N)))).batch(8)
    labels = labelled_samples(ds, specs=SPEC)[1]  # its last batch holds 2 samples
    np.testing.assert_array_equal(labels[0], np.arange(N))
    np.testing.assert_array_equal(labels[1], 2 * np.arange(N))


def test_two_inputs_specs_follow_tflite_order(two_in):
    _, specs, _ = two_in
    assert [s.name for s in specs] == ["b", "a"]
    assert specs[0].shape == (None, 4, 4, 1) and specs[1].shape == (None, 8)


def test_dict_ordered_by_model_inputs(two_in):
    model, specs, data = two_in
    _check_two(rd(data, specs=specs), data)
    _check_two(representative_dataset({"a": data["a"], "b": data["b"]}, model=model), data)
    # Labels dropped, for dicts and lists of arrays alike.
    y = np.zeros(N)
    _check_two(rd((data, y), specs=specs), data)
    _check_two(rd((data, y, y), specs=specs), data)
    _check_two(rd(([data["b"], data["a"]], y), specs=specs), data)


def test_list_of_arrays_for_several_inputs(two_in):
    _, specs, data = two_in
    _check_two(rd([data["b"], data["a"]], specs=specs), data)
    _check_two(rd((data["b"], data["a"]), specs=specs), data)
    # The Keras model's own order (a, b; model.fit's convention) is accepted
    # too where the shapes tell the orders apart.
    assert [s.position for s in specs] == [1, 0]
    _check_two(rd([data["a"], data["b"]], specs=specs), data)
    _check_two(rd(([data["a"], data["b"]], np.zeros(N)), specs=specs), data)
    _check_two(rd((s for s in zip(data["a"], data["b"])), specs=specs), data)
    # Without positions, a wrong order is caught, naming expected vs received.
    bare = [InputSpec(s.name, s.shape, s.dtype) for s in specs]
    assert bare == specs  # position takes no part in comparisons
    with pytest.raises(ValueError, match=r"Sample 0: expected input 'b'.*Received shape"):
        rd([data["a"], data["b"]], specs=bare)


def test_ambiguous_list_order_keeps_graph_order_and_warns(caplog):
    specs = [InputSpec("a", (None, 3), np.dtype(np.float32), position=1),
             InputSpec("z", (None, 3), np.dtype(np.float32), position=0)]
    first, second = np.zeros((2, 3)), np.ones((2, 3))
    with caplog.at_level("WARNING", logger="tfq8"):
        rep = rd([first, second], specs=specs)
    np.testing.assert_array_equal(rep.inputs[0], first)
    assert "Pass a dict" in caplog.text and "['z', 'a']" in caplog.text
    # Re-adapting a RepresentativeDataset goes by name: same order, no warning.
    caplog.clear()
    with caplog.at_level("WARNING", logger="tfq8"):
        again = rd(rep, specs=specs)
    assert caplog.text == ""
    np.testing.assert_array_equal(again.inputs[1], second)


def test_tf_data_batched_and_unbatched(two_in):
    _check_x(rd(tf.data.Dataset.from_tensor_slices(X)))
    _check_x(rd(tf.data.Dataset.from_tensor_slices(X).batch(3)))
    _check_x(rd(tf.data.Dataset.from_tensor_slices((X, np.arange(N))).batch(4)))
    _check_x(rd(tf.data.Dataset.from_tensor_slices((X, np.arange(N)))))
    _, specs, data = two_in
    _check_two(rd(tf.data.Dataset.from_tensor_slices(data), specs=specs), data)
    _check_two(rd(tf.data.Dataset.from_tensor_slices((data, np.zeros(N))).batch(3),
                  specs=specs), data)


def test_generators_iterables_and_callables():
    _check_x(rd(X[i] for i in range(N)))  # unbatched samples
    _check_x(rd(iter([X[:4], X[4:]])))  # batches
    _check_x(rd([X[i] for i in range(N)]))  # a list of samples
    _check_x(rd([X[:3], X[3:]]))  # a list of batches (one-input model)
    _check_x(rd([(X[i], 0) for i in range(N)]))  # (x, y) samples
    # TFLite's own representative_dataset style: a callable yielding lists.
    _check_x(rd(lambda: ([X[i : i + 1]] for i in range(N))))


def test_keras_pydataset():
    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return X[i * 3 : (i + 1) * 3], np.zeros(len(X[i * 3 : (i + 1) * 3]))

    _check_x(rd(Batches()))
    _check_x(rd(Batches(), num_samples=5), 5)


def test_integer_inputs_cast_and_checked():
    spec = [InputSpec("ids", (None, 3), np.dtype(np.int32))]
    rep = rd(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), specs=spec)
    assert rep.inputs[0].dtype == np.int32 and rep.inputs[0].tolist() == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(ValueError, match=r"Sample 0: input 'ids' has integer dtype int32. "
                                         r"Received non-integral float64"):
        rd(np.array([[1.5, 2.0, 3.0]]), specs=spec)


@pytest.mark.parametrize("values, match", [
    (np.full((2, 3), 2**33, np.int64), r"\[-2147483648, 2147483647\]. Received int64 values in "
                                       r"\[8589934592, 8589934592\]"),
    (np.full((2, 3), 2**63, np.uint64), r".*Received uint64 values"),
    (np.full((2, 3), 2**31, np.float32), r".*Received float32 values in \[2147483648, 2147483648\]"),
    (np.full((2, 3), 1e10), r".*Received float64 values in \[10000000000, 10000000000\]"),
])
def test_integer_inputs_refuse_values_the_cast_would_wrap(values, match):
    spec = [InputSpec("ids", (None, 3), np.dtype(np.int32))]
    values = values.copy()
    values[0] = 1  # sample 1 is the bad one
    with pytest.raises(ValueError, match=r"^Sample 1: input 'ids' is int32, which holds values in " + match):
        rd(values, specs=spec)


def test_float64_beyond_float32_is_refused_not_turned_into_inf():
    x = X.copy()
    x[3, 1] = -1e300
    with pytest.raises(ValueError, match=r"^Sample 3: input 'x' is float32.*Received float64 values "
                                         r"in \[-1e\+300, "):
        rd(x)
    with pytest.raises(ValueError, match=r"^Sample 3: input 'input 0' is float32"):
        representative_dataset(x)


def test_one_sample_without_batch_dimension_and_python_lists():
    rep = rd(X[2])
    assert len(rep) == 1 and np.array_equal(rep.inputs[0], X[2:3].astype(np.float32))
    _check_x(rd(X.tolist()))
    assert len(rd([[0.5] * 4] * 3)) == 3


def test_a_file_name_is_not_data():
    with pytest.raises(TypeError, match=r"not a file name: load the file first.*Received: data='calib.npy'"):
        rd("calib.npy")


@pytest.mark.parametrize("num_samples", [1, 3, 4, 7, 10, 25])
def test_num_samples_honoured_across_batches(num_samples):
    want = min(num_samples, N)
    _check_x(rd(X, num_samples=num_samples), want)
    _check_x(rd(tf.data.Dataset.from_tensor_slices(X).batch(3), num_samples=num_samples), want)
    _check_x(rd((X[i : i + 4] for i in range(0, N, 4)), num_samples=num_samples), want)


def test_num_samples_stops_reading_the_stream():
    pulled = []

    def stream():
        for i in range(N):
            pulled.append(i)
            yield X[i]

    _check_x(rd(stream(), num_samples=3), 3)
    assert len(pulled) <= 4


def test_infinite_tf_data_needs_num_samples():
    ds = tf.data.Dataset.from_tensor_slices(X).repeat()
    with pytest.raises(ValueError, match=r"infinite.*Received: num_samples=None"):
        rd(ds)
    rep = rd(ds, num_samples=25)
    assert len(rep) == 25
    np.testing.assert_array_equal(rep.inputs[0][N:2 * N], X.astype(np.float32))


def test_model_argument_and_without_specs():
    model = factories.mlp(features=4)
    rep = representative_dataset(X, model=model)
    assert [s.shape for s in rep.specs] == [(None, 4)]
    _check_x(rep)
    # Without a model, arrays are batches and floats become float32.
    free = representative_dataset(X)
    assert free.specs is None and len(free) == N and free.inputs[0].dtype == np.float32


def test_reusing_a_representative_dataset():
    rep = rd(X)
    _check_x(rd(rep))
    _check_x(rep.take(3), 3)
    assert [len(b[0]) for b in rep.batches(4)] == [4, 4, 2]
    assert "10 samples" in repr(rep)


# ------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("data, match", [
    (X[:, :3], r"Sample 0: expected input 'x' of shape \(None, 4\).*Received shape \(None, 3\)"),
    (X[None], r"Sample 0: expected input 'x'.*Received shape \(1, 10, 4\)"),
    (np.array([["a"] * 4] * 3), r"Sample 0: input 'x' must be numeric \(float32\). Received dtype <U1"),
    ({"y": X}, r"Sample 0: dict keys must be the model's input names \['x'\]. Received keys: \['y'\]"),
    (np.zeros((0, 4)), r"data is empty.*Received: 0 samples"),
    ([], r"data is empty.*Received: an empty sequence"),
    (iter([]), r"data is empty.*Received: 0 samples \(a generator or iterator yields its items once"),
    (None, r"Received: data=None"),
    (X.astype(np.complex64), r"must be real. Received dtype complex64"),
])
def test_bad_inputs_raise_value_error(data, match):
    with pytest.raises(ValueError, match=match):
        rd(data)


def test_wrong_shape_later_in_a_stream_names_the_sample():
    def stream():
        yield X[:4]
        yield X[4:6, :3]

    with pytest.raises(ValueError, match=r"^Sample 4: expected input 'x'.*axis 1 is 3, not 4"):
        rd(stream())


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_names_the_sample_index(bad):
    x = X.copy()
    x[7, 2] = bad
    with pytest.raises(ValueError, match=r"^Sample 7: input 'x' contains NaN or Inf"):
        rd(x)
    with pytest.raises(ValueError, match=r"^Sample 7: input 'x' contains NaN or Inf"):
        rd(tf.data.Dataset.from_tensor_slices(x).batch(3))
    with pytest.raises(ValueError, match=r"^Sample 7: input 'x' contains NaN or Inf"):
        rd(x[i] for i in range(N))


def test_wrong_dict_names_and_counts(two_in):
    _, specs, data = two_in
    with pytest.raises(ValueError, match=r"input names \['b', 'a'\]. Received keys: \['a', 'c'\] "
                                         r"\(missing \['b'\]\) \(unexpected \['c'\]\)"):
        rd({"a": data["a"], "c": data["b"]}, specs=specs)
    with pytest.raises(ValueError, match=r"the model has 2 input\(s\) \(b, a\). Received 1 array"):
        rd(data["a"], specs=specs)
    with pytest.raises(ValueError, match=r"the model has 2 input\(s\) \(b, a\). Received 3 array"):
        rd([data["b"], data["a"], data["a"]], specs=specs)
    with pytest.raises(ValueError, match=r"same number of samples. Received batch sizes \[10, 3\]"):
        rd([data["b"], data["a"][:3]], specs=specs)
    with pytest.raises(ValueError, match=r"input names are unknown.*Received keys: \['a', 'b'\]"):
        representative_dataset(data)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "10", True])
def test_bad_num_samples(bad):
    with pytest.raises(ValueError, match=f"Received: num_samples={bad!r}"):
        rd(X, num_samples=bad)


def test_unreadable_kinds_raise_type_error():
    with pytest.raises(TypeError, match="Received: int"):
        rd(5)
    with pytest.raises(TypeError, match="Received: object"):
        rd(object())


def test_inconsistent_stream_without_specs():
    with pytest.raises(ValueError, match=r"Sample 4: every sample must have the same structure"):
        representative_dataset(iter([X[:4], X[4:, :2]]))


def test_a_long_iterator_without_num_samples_is_warned_about(monkeypatch, caplog):
    monkeypatch.setattr(tfq8.data, "UNSIZED_WARNING_SAMPLES", 50)
    samples = (np.zeros((1, 4), np.float32) for _ in range(120))
    assert len(representative_dataset(samples, specs=SPEC)) == 120
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "Read 50 samples" in warned[0] and "num_samples" in warned[0]
    caplog.clear()
    representative_dataset((np.zeros((1, 4), np.float32) for _ in range(120)), specs=SPEC,
                           num_samples=100)
    representative_dataset([np.zeros((1, 4), np.float32)] * 120, specs=SPEC)  # has a length
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_an_endless_stream_without_num_samples_is_refused_past_the_memory_cap(monkeypatch):
    monkeypatch.setattr(tfq8.data, "UNSIZED_MAX_BYTES", 64 * 16)  # 64 samples of 16 bytes
    endless = itertools.repeat(np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match=r"data is a repeat with no known end and has yielded "
                                         r"65 samples .*Received: num_samples=None"):
        representative_dataset(endless, specs=SPEC)
    unknown = tf.data.Dataset.from_generator(  # a tf.data.Dataset of unknown cardinality
        lambda: itertools.repeat(np.zeros(4, np.float32)), output_signature=tf.TensorSpec((4,)))
    with pytest.raises(ValueError, match=r"data is a \w*Dataset with no known end"):
        representative_dataset(unknown, specs=SPEC)
    assert len(representative_dataset(unknown, specs=SPEC, num_samples=100)) == 100
    assert len(representative_dataset(endless, specs=SPEC, num_samples=500)) == 500
    assert len(representative_dataset([np.zeros((1, 4), np.float32)] * 200, specs=SPEC)) == 200


def test_samples_of_two_sizes_for_a_dynamic_model_name_the_sample():
    dynamic = [InputSpec("image", (None, None, None, 3), np.dtype(np.float32))]
    big, small = np.zeros((3, 16, 16, 3), np.float32), np.zeros((2, 8, 8, 3), np.float32)
    assert len(representative_dataset([big, big], specs=dynamic)) == 6
    with pytest.raises(ValueError, match=r"Sample 3: .*\(16, 16, 3\).*resize.*Received \[\(8, 8, 3\)\]"):
        representative_dataset(iter([big, small]), specs=dynamic)


# ------------------------------------------------- as TFLite's representative_dataset
def test_yields_single_samples_in_input_order(two_in):
    _, specs, data = two_in
    rep = rd(data, specs=specs)
    samples = list(rep())
    assert len(samples) == N
    assert [a.shape for a in samples[3]] == [(1, 4, 4, 1), (1, 8)]
    np.testing.assert_array_equal(samples[3][1], data["a"][3:4])


def test_works_as_tflite_converter_representative_dataset():
    model = factories.mlp(features=4, classes=3)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = tfq8.representative_dataset(
        tf.data.Dataset.from_tensor_slices(X).batch(4), model=model, num_samples=8)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    blob = converter.convert()
    assert tfq8.inspect(blob).full_integer


def test_a_fixed_batch_size_model_gets_whole_batches():
    model = factories.fixed_batch_cnn(batch=4)
    rep = tfq8.representative_dataset(factories.images(10, shape=(8, 8, 3)), model=model)
    assert rep.batch == 4 and [b[0].shape for b in rep()] == [(4, 8, 8, 3)] * 2
    assert len(rep.whole_batches()) == 8
    assert tfq8.representative_dataset(X, model=factories.mlp(features=4, classes=3)).batch == 1


def test_ragged_sparse_and_rank_mistakes_get_clear_errors():
    model = factories.cnn(input_shape=(8, 8, 1))
    with pytest.raises(TypeError, match=r"Received: a tf.RaggedTensor; pad or densify it first"):
        tfq8.representative_dataset(tf.ragged.constant([[1.0, 2.0], [3.0]]), model=model)
    with pytest.raises(TypeError, match=r"Received: a tf.SparseTensor.*tf.sparse.to_dense"):
        tfq8.representative_dataset(tf.sparse.from_dense(np.ones((2, 8, 8, 1), np.float32)),
                                    model=model)
    with pytest.raises(TypeError, match=r"nested lists of different lengths"):
        tfq8.representative_dataset([[1.0, 2.0], [3.0]])
    with pytest.raises(ValueError, match=r"Received shape \(4, 8, 8\) \(its axis 0 is 4, not 8\), "
                                         r"read as one sample.*x\[\.\.\., None\]"):
        tfq8.representative_dataset(np.zeros((4, 8, 8), np.float32), model=model)


def test_an_endless_pydataset_needs_num_samples():
    class Endless(keras.utils.PyDataset):
        @property
        def num_batches(self):
            return None

        def __getitem__(self, i):
            return np.full((4, 4), float(i), np.float32)

    model = factories.mlp(features=4, classes=3)
    rep = tfq8.representative_dataset(Endless(), model=model, num_samples=9)
    assert len(rep) == 9 and rep.inputs[0][8, 0] == 2.0
    with pytest.raises(ValueError, match=r"PyDataset without an end .* pass num_samples"):
        tfq8.representative_dataset(Endless(), model=model)


def test_take_and_batches_refuse_a_bad_count_at_once():
    rep = rd(X)
    for bad in (0, -1, 1.5, "3", True, None):
        with pytest.raises(ValueError, match=rf"^n must be a positive integer\. Received: n={bad!r}$"):
            rep.take(bad)
        with pytest.raises(ValueError, match=r"^batch_size must be a positive integer\. "
                                             rf"Received: batch_size={bad!r}$"):
            rep.batches(bad)  # not only when the first batch is drawn
    assert len(rep.take(1000)) == N


def test_a_representative_dataset_made_by_hand_is_checked_before_calibrating():
    model = factories.mlp(features=4)
    made = representative_dataset(X, model=model)
    assert made.checked and made.take(2).checked
    bad = X.astype(np.float32)
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"^Sample 7: input 'features' contains NaN or Inf"):
        tfq8.calibrate(model, RepresentativeDataset([bad], made.specs))
    with pytest.raises(ValueError, match=r"^Sample 0: expected input 'features' of shape "
                                         r"\(None, 4\).*Received shape \(None, 3\)"):
        tfq8.calibrate(model, RepresentativeDataset([made.inputs[0][:, :3]], made.specs))


def test_a_representative_dataset_made_by_hand_takes_a_list_of_arrays_of_one_length():
    """One array was split into one input per row (TFLite's converter then got samples of
    the wrong shape); arrays of different lengths or none at all were taken too."""
    with pytest.raises(TypeError, match=r"^inputs must be a list of arrays, one per model input"
                                        r".*Received: inputs of type ndarray$"):
        RepresentativeDataset(X)
    with pytest.raises(ValueError, match=r"^inputs must be one or more arrays.*"
                                         r"Received: float64\[10, 4\], float64\[3, 4\]$"):
        RepresentativeDataset([X, X[:3]])
    with pytest.raises(ValueError, match=r"Received: no arrays$"):
        RepresentativeDataset([])
    with pytest.raises(ValueError, match=r"Received: float32\[\]$"):
        RepresentativeDataset([np.float32(1)])
    rep = RepresentativeDataset((X, X[:, :2]))
    assert len(rep) == len(X) and [a.shape for a in next(rep())] == [(1, 4), (1, 2)]


def test_a_representative_dataset_made_by_hand_takes_any_iterable_of_arrays():
    """A generator, a map or a dict's values gave the arrays before the list check came,
    and still do; a dict itself (its keys), a tensor or a dataset (their rows) do not."""
    import tensorflow as tf  # noqa: PLC0415

    for inputs in ((a for a in [X, X[:, :2]]), map(np.asarray, [X, X[:, :2]]),
                   {"a": X, "b": X[:, :2]}.values()):
        rep = RepresentativeDataset(inputs)
        assert [a.shape for a in rep.inputs] == [(10, 4), (10, 2)]
    for inputs in ({"a": X}, tf.constant(X), tf.data.Dataset.from_tensor_slices(X), "x.npy"):
        with pytest.raises(TypeError, match=r"^inputs must be a list of arrays.*Received: "
                                            r"inputs of type "):
            RepresentativeDataset(inputs)


def test_a_function_that_needs_arguments_is_refused_naming_it():
    def samples(batch_size):
        yield X[:batch_size]

    with pytest.raises(TypeError, match=r"^data as a function must take no arguments: .*"
                                        r"Received: .*samples\(batch_size\)$"):
        rd(samples)
    with pytest.raises(TypeError, match=r"^calibration_data as a function must take no arguments"):
        tfq8.CalibrationCallback(samples)  # in the constructor, not after training
    _check_x(rd(lambda n=N: (X[i] for i in range(n))))  # defaults are fine


def test_an_endless_stream_of_empty_batches_is_refused_not_read_forever():
    from tfq8 import data as data_mod  # noqa: PLC0415

    def endless():
        while True:
            yield X[:0]

    def mostly_empty():  # empty batches now and then are read past
        for i in range(N):
            yield from [X[:0]] * 5 + [X[i : i + 1]]

    match = (rf"^data yielded {data_mod.EMPTY_BATCHES_MAX} empty batches in a row \(0 samples "
             r"each\) after 0 sample\(s\): expected batches holding samples\. Received: batches "
             r"of shapes \[\(0, 4\)\]$")
    with pytest.raises(ValueError, match=match):
        rd(endless())
    with pytest.raises(ValueError, match=match):
        rd(endless(), num_samples=5)
    with pytest.raises(ValueError, match=match):
        rd(tf.data.Dataset.from_tensors(X[:0].astype(np.float32)).repeat(), num_samples=5)
    _check_x(rd(mostly_empty()))
