"""Models accepted: Keras 3 / tf_keras models and .keras, .h5, SavedModel paths."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

import factories
import keras
import tfq8
from tfq8 import models
from tfq8.harness.interpreter import ModelRunner


def _full_integer(model, data) -> None:
    blob = tfq8.convert(model, data, method="minmax")
    info = tfq8.inspect(blob)
    assert info.full_integer, str(info)


def _features(n: int = 16, features: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, features)).astype(np.float32)


# ------------------------------------------------------------ live models
def test_sequential_specs():
    handle = models.load_model(factories.mlp())
    assert isinstance(handle, models.ModelHandle) and handle.saved_model_dir is None
    assert [(s.name, s.shape, s.dtype) for s in handle.specs] == [
        ("features", (None, 20), np.dtype(np.float32))]
    assert models.load_model(handle) is handle
    assert models.is_keras_model(handle.keras_model)


def test_functional_two_in_two_out_converts():
    model = factories.two_in_two_out()
    specs = models.input_specs(model)
    assert [s.name for s in specs] == ["b", "a"]  # the TFLite graph's order
    _full_integer(model, factories.two_in_data(16))


def test_subclassed_converts():
    model = factories.subclassed(features=6)
    specs = models.input_specs(model)
    assert len(specs) == 1 and specs[0].shape == (None, 6)
    _full_integer(model, _features(features=6))


def test_unbuilt_model_rejected():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    with pytest.raises(ValueError, match="not built.*Received: Net"):
        models.load_model(Net())


def test_tf_keras_model_and_h5_path(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    model = factories.tf_keras_cnn(input_shape=(8, 8, 3), classes=4)
    assert isinstance(model, tf_keras.Model) and models.is_keras_model(model)
    specs = models.input_specs(model)
    assert [s.shape for s in specs] == [(None, 8, 8, 3)]
    path = tmp_path / "cnn.h5"
    model.save(path)
    handle = models.load_model(str(path))
    assert handle.keras_model is not None
    assert handle.fingerprint() == models.load_model(model).fingerprint()
    _full_integer(path, factories.images(16, (8, 8, 3)))


# ------------------------------------------------------------------ paths
def test_keras_file_path(tmp_path):
    model = factories.mlp()
    path = tmp_path / "mlp.keras"
    model.save(path)
    handle = models.load_model(path)  # os.PathLike
    assert [s.shape for s in handle.specs] == [(None, 20)]
    assert handle.fingerprint() == models.load_model(model).fingerprint()
    _full_integer(str(path), _features())


def test_loading_or_copying_a_model_leaves_the_users_random_state_alone(tmp_path):
    """Keras seeds each initializer it makes without a seed from Python's `random`:
    loading a model file, or the float32 copy of a mixed-precision model, changed the
    weights of the next model the user built after keras.utils.set_random_seed."""
    import random  # noqa: PLC0415

    path = tmp_path / "mlp.keras"
    factories.mlp().save(path)
    half = _half_precision_mlp()
    for model in (path, half):
        keras.utils.set_random_seed(1)
        models.load_model(model)
        after = random.random()
        keras.utils.set_random_seed(1)
        assert after == random.random(), model


def test_keras3_h5_path(tmp_path):
    model = factories.mlp()
    path = tmp_path / "mlp.h5"
    model.save(path)
    handle = models.load_model(str(path))
    assert handle.fingerprint() == models.load_model(model).fingerprint()


def test_saved_model_folder(tmp_path):
    model = factories.mlp()
    folder = tmp_path / "saved"
    model.export(str(folder))
    assert (folder / "saved_model.pb").exists()
    handle = models.load_model(str(folder))
    assert handle.keras_model is None and handle.saved_model_dir == str(folder)
    assert [s.shape for s in handle.specs] == [(None, 20)]
    fp = handle.fingerprint()
    assert fp == models.load_model(str(folder)).fingerprint()
    _full_integer(str(folder), _features())


def test_a_saved_model_reading_variables_at_run_time_says_what_to_pass(tmp_path):
    model = factories.mlp()

    class Wrapper(tf.Module):  # variables TFLite does not fold: READ_VARIABLE ops
        def __init__(self):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 20], tf.float32)])
        def serve(self, x):
            return {"y": self.model(x)}

    wrapper = Wrapper()
    tf.saved_model.save(wrapper, str(tmp_path / "sm"), signatures={"serving_default": wrapper.serve})
    with pytest.raises(ValueError, match=r"\(READ_VARIABLE\) failed to invoke\. The converted model "
                                         r"still reads variables .* model\.export\(path\)\.$"):
        tfq8.convert(str(tmp_path / "sm"), _features())


def test_a_saved_model_of_several_signatures_says_how_to_pick_one(tmp_path):
    class TwoSignatures(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.random.stateless_normal((20, 4), seed=(1, 2)))

        @tf.function(input_signature=[tf.TensorSpec([None, 20], tf.float32)])
        def scores(self, x):
            return {"scores": tf.nn.relu(x @ self.w)}

        @tf.function(input_signature=[tf.TensorSpec([None, 20], tf.float32)])
        def doubled(self, x):
            return {"doubled": tf.nn.relu(2.0 * (x @ self.w))}

    module = TwoSignatures()
    for signatures in ({"scores": module.scores, "doubled": module.doubled},
                       {"serving_default": module.scores, "doubled": module.doubled}):
        folder = str(tmp_path / "_".join(signatures))
        tf.saved_model.save(module, folder, signatures=signatures)
        with pytest.raises(ValueError, match=r"^model is a SavedModel with 2 signatures \([a-z_]+, "
                                             r"[a-z_]+\), and TFLite's converter makes a graph of "
                                             r"each.*signature_keys=\[key\]\)\.convert\(\) and "
                                             r"pass that file as the model\. Received: model='[^']*'$"):
            tfq8.convert(folder, _features())
    # ... and what the message says works: one signature as a float .tflite.
    converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=["doubled"])
    float_path = tmp_path / "doubled.tflite"
    float_path.write_bytes(converter.convert())
    _full_integer(str(float_path), _features())


# ------------------------------------------------------------- bad inputs
def test_bad_paths_raise_value_error(tmp_path):
    missing = tmp_path / "missing.keras"
    with pytest.raises(ValueError, match="does not exist. Received: model="):
        models.load_model(str(missing))
    other = tmp_path / "model.txt"
    other.write_text("not a model")
    with pytest.raises(ValueError, match=r"\.keras or \.h5 file, a SavedModel folder or a float "
                                         r"\.tflite file. Received: model="):
        models.load_model(str(other))
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"not a SavedModel \(no saved_model.pb\). Received: model="):
        models.load_model(str(empty))
    no_signature = tmp_path / "no_signature"
    tf.saved_model.save(tf.Module(), str(no_signature))
    with pytest.raises(ValueError, match=r"serving signature.*Received: model="):
        models.load_model(str(no_signature))


def test_corrupt_model_files_are_named(tmp_path):
    """A model file that exists but is not a zip / HDF5 file is not reported as missing."""
    garbage = tmp_path / "bad.keras"
    garbage.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"^model file exists but is not a valid \.keras archive: "
                                         r"it is not a zip file\..*model\.save.*Received: "
                                         r"model='.*bad\.keras'$") as info:
        models.load_model(str(garbage))
    assert "not found" not in str(info.value)
    for ext, reason in [("keras", "it is not a zip file"), ("h5", r"HDF5 cannot open it \(truncated")]:
        path = tmp_path / f"mlp.{ext}"
        factories.mlp().save(path)
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
        with pytest.raises(ValueError, match=f"exists but is not a valid .{ext} .*{reason}"):
            models.load_model(str(path))


@pytest.mark.parametrize("bad", [5, None, np.zeros(3)])
def test_bad_kinds_raise_type_error(bad):
    with pytest.raises(TypeError, match=f"Received: {type(bad).__name__}"):
        models.load_model(bad)


def test_a_string_input_is_refused_naming_the_input_before_any_work():
    inp = keras.Input((), dtype="string", name="text")
    length = keras.layers.Lambda(lambda t: keras.ops.cast(tf.strings.length(t), "float32"),
                                 output_shape=())(inp)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Reshape((1,))(length)))
    with pytest.raises(ValueError, match=r"^model input 'text' has dtype string: .*numbers.*"
                                         r"Received: a model whose input 'text' is string$"):
        tfq8.convert(model, np.array(["a", "bb"]))


def test_bytes_are_a_tflite_model_not_a_path():
    with pytest.raises(ValueError, match=r"^model is not a TFLite model.*Received: 11 bytes"):
        models.load_model(b"model.keras")


# ------------------------------------------------------------- fingerprint
def test_fingerprint_changes_with_weights(tmp_path):
    model = factories.mlp()
    fp = models.load_model(model).fingerprint()
    assert fp == models.load_model(factories.mlp()).fingerprint()  # same seed
    assert fp != models.load_model(factories.mlp(seed=1)).fingerprint()
    w = model.layers[0].kernel
    w.assign(w.numpy() + np.float32(1e-6))
    assert models.load_model(model).fingerprint() != fp
    # A SavedModel's fingerprint follows its files.
    folder = tmp_path / "sm"
    model.export(str(folder))
    fp_dir = models.load_model(str(folder)).fingerprint()
    with open(os.path.join(folder, "extra.txt"), "w", encoding="utf-8") as f:
        f.write("x")
    assert models.load_model(str(folder)).fingerprint() != fp_dir


# ------------------------------------------------- input order end to end
def _same_shape_inputs():
    """Two list inputs of the same shape whose names sort against Keras'
    order: a swap would go unnoticed by any shape check. (Built on a dict, the
    model is `_dict_model`'s, which TFLite's own from_keras_model fails on.)"""
    keras.utils.set_random_seed(0)
    z = keras.Input((4,), name="z")
    a = keras.Input((4,), name="a")
    out = keras.layers.Dense(3)(keras.layers.Concatenate()([z * 3.0, a - 1.0]))
    model = keras.Model([z, a], out)
    model.call_with = lambda values: model([values["z"], values["a"]])
    return model


@pytest.mark.parametrize("make, data, keras_list", [
    (factories.two_in_two_out, lambda: factories.two_in_data(4), None),
    # A list in the Keras model's order (a, b), unambiguous by shape.
    (factories.two_in_two_out, lambda: factories.two_in_data(4), ["a", "b"]),
    (_same_shape_inputs, lambda: {k: np.random.default_rng(i).normal(size=(4, 4)).astype(np.float32)
                                  for i, k in enumerate("za")}, None),
])
def test_samples_reach_the_right_graph_inputs(make, data, keras_list):
    """Data, ordered by the specs, feeds each float TFLite input the array
    the Keras model gets under that name."""
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    model, values = make(), data()
    handle = models.load_model(model)
    given = [values[k] for k in keras_list] if keras_list else values
    rep = tfq8.representative_dataset(given, model=handle)
    interp = Interpreter(model_content=handle.to_float_tflite())
    interp.allocate_tensors()
    details = interp.get_input_details()
    assert len(details) == len(rep.inputs)
    want = model.call_with(values) if hasattr(model, "call_with") else model(values)
    want = [np.asarray(v) for v in (want.values() if isinstance(want, dict) else [want])]
    for i, sample in enumerate(rep()):
        for d, a in zip(details, sample):
            interp.set_tensor(d["index"], a)
        interp.invoke()
        got = [interp.get_tensor(d["index"]) for d in interp.get_output_details()]
        for g in got:  # outputs may be ordered differently: match by shape and value
            assert any(g.shape[1:] == w.shape[1:] and np.allclose(g[0], w[i], atol=1e-5)
                       for w in want)


# ------------------------------------------- dict inputs, keys not sorted
def _dict_model(lib: str, shapes: dict[str, int]):
    """A model built on a dict of inputs in `shapes`' key order, whose output changes
    when two inputs of one shape are swapped: Dense(first) - 3 * second (+ Dense(third))."""
    k = pytest.importorskip(lib)
    k.utils.set_random_seed(0)
    inputs = {name: k.Input((size,), name=name) for name, size in shapes.items()}
    first, second, *rest = inputs.values()
    out = k.layers.Dense(4)(first) - 3.0 * second
    for x in rest:
        out = out + k.layers.Dense(4)(x)
    return k.Model(inputs, out)


def _dict_data(shapes: dict[str, int], n: int = 64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {name: rng.normal(size=(n, size)).astype(np.float32) for name, size in shapes.items()}


def _run_by_name(blob: bytes, data: dict[str, np.ndarray]) -> np.ndarray:
    """The int8 model's one output for `data`, fed through its signature by input name."""
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    runner = Interpreter(model_content=blob).get_signature_runner()
    feed = {}
    for name, d in runner.get_input_details().items():
        scale, zero = d["quantization"]
        feed[name] = np.clip(np.round(data[name] / scale + zero), -128, 127).astype(np.int8)
    ((name, out),) = runner(**feed).items()
    scale, zero = runner.get_output_details()[name]["quantization"]
    return (out.astype(np.float32) - zero) * scale


def _sqnr_db(want, got) -> float:
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    return float(10 * np.log10(np.sum(want**2) / np.sum((want - got) ** 2)))


@pytest.mark.parametrize("lib", ["keras", "tf_keras"])
@pytest.mark.parametrize("shapes", [{"z": 4, "a": 4}, {"c": 4, "a": 4, "b": 3}],
                         ids=["z4-a4", "c4-a4-b3"])
def test_dict_inputs_sharing_a_shape_convert_by_name(lib, shapes):
    """Keras 3 models built on a dict whose keys are not sorted, which TFLite's converter
    fails on (`models._with_list_inputs`), convert; tf_keras ones still do. Each input
    keeps its name in the signature and gets its own data: fed by name, the int8 model
    matches Keras, and Keras with the two same-shape inputs swapped does not."""
    model, data = _dict_model(lib, shapes), _dict_data(shapes)
    blob = tfq8.convert(model, data, method="minmax")
    assert blob == tfq8.convert(model, data, method="minmax")  # the same bytes again
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    (signature,) = Interpreter(model_content=blob).get_signature_list().values()
    assert sorted(signature["inputs"]) == sorted(shapes)
    want = np.asarray(model(data))
    first, second = list(shapes)[:2]
    swapped = np.asarray(model({**data, first: data[second], second: data[first]}))
    got = _run_by_name(blob, data)
    assert _sqnr_db(want, got) > 30, _sqnr_db(want, got)
    assert _sqnr_db(want, swapped) < 5 and _sqnr_db(swapped, got) < 5
    assert tfq8.inspect(blob).full_integer
    # tfq8.check feeds dict data by name too (its Keras reference converts as the model).
    assert tfq8.check(blob, reference=model, data=data).outputs[0].sqnr_db > 30


def test_dict_inputs_of_a_functional_subclass_overriding_call():
    """A functional subclass whose own `call` adds to the graph converts through that call."""

    class Doubled(keras.Model):
        def __init__(self):
            z, a = keras.Input((4,), name="z"), keras.Input((4,), name="a")
            super().__init__({"z": z, "a": a}, keras.layers.Dense(4)(z) - 3.0 * a)

        def call(self, inputs, training=None, mask=None):
            return 2.0 * super().call(inputs, training=training, mask=mask)

    keras.utils.set_random_seed(0)
    model, data = Doubled(), _dict_data({"z": 4, "a": 4})
    assert models._with_list_inputs(model) is not model
    blob = tfq8.convert(model, data, method="minmax")
    assert blob == tfq8.convert(model, data, method="minmax")
    assert _sqnr_db(model(data), _run_by_name(blob, data)) > 30


def test_models_the_converter_takes_are_handed_to_it_as_they_are():
    """Dict inputs with sorted keys, lists and tf_keras models are not rebuilt."""
    for model in (factories.two_in_two_out(), _dict_model("tf_keras", {"z": 4, "a": 4}),
                  _same_shape_inputs(), factories.mlp()):
        assert models._with_list_inputs(model) is model


def test_an_unregistered_custom_layer_is_named(tmp_path):
    class Sin(keras.layers.Layer):
        def call(self, x):
            return keras.ops.sin(x)

    path = str(tmp_path / "sin.keras")
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), Sin()]).save(path)
    with pytest.raises(ValueError, match=r"custom class 'Sin', which is not registered.*"
                                         r"register_keras_serializable.*Received: model="):
        tfq8.convert(path, np.zeros((4, 4), np.float32))


def _int8_outputs(blob: bytes, data: np.ndarray) -> tuple:
    """The int8 model's quantization of its output and its outputs on `data`."""
    runner = ModelRunner(blob)
    out = runner.outputs[0]
    return (tuple(out.scales), tuple(out.zero_points),
            runner.run([data])[0].tobytes())


def _half_precision_mlp(dtype: str = "mixed_float16"):
    """`factories.mlp`'s architecture with its hidden layer under a half-precision policy."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((20,), name="features"),
                             keras.layers.Dense(32, activation="gelu", dtype=dtype),
                             keras.layers.Dense(5, dtype="float32")])


@pytest.mark.parametrize("dtype", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_model_converts_as_its_float32_copy(dtype, caplog):
    model = _half_precision_mlp(dtype)
    data = _features()
    with caplog.at_level("INFO", logger="tfq8"):
        blob = tfq8.convert(model, data, method="minmax")
    assert "converts a copy that computes in float32" in caplog.text
    assert tfq8.inspect(blob).full_integer
    # The int8 model of the float32 model a user would rebuild by hand with these
    # weights (its layers are named apart, so its bytes differ only in names).
    rebuilt = factories.mlp()
    rebuilt.set_weights(model.get_weights())
    assert _int8_outputs(blob, data) == _int8_outputs(
        tfq8.convert(rebuilt, data, method="minmax"), data)
    # The user's model and the global policy are left as they were.
    assert model.layers[0].dtype_policy.name == dtype
    assert keras.config.dtype_policy().name == "float32"
    # New weights (a later epoch) are the copy's too: it is refreshed on every call.
    model.set_weights([w * 0.5 for w in model.get_weights()])
    rebuilt.set_weights(model.get_weights())
    assert _int8_outputs(tfq8.convert(model, data, method="minmax"), data) == _int8_outputs(
        tfq8.convert(rebuilt, data, method="minmax"), data)


def test_mixed_precision_copy_is_made_again_when_the_layers_change():
    # The copy was kept per model object: after Sequential.add the weights no longer
    # fitted it (ValueError from set_weights), and after pop/add of a layer of the same
    # shapes it computed the old layer (no relu here) without a word.
    model = _half_precision_mlp()
    x = _features()
    first = models.load_model(model).keras_model
    model.pop()
    model.add(keras.layers.Dense(5, activation="relu", dtype="mixed_float16"))
    copy = models.load_model(model).keras_model
    assert copy is not first
    np.testing.assert_allclose(copy(x), model(x), atol=2e-2)
    model.add(keras.layers.Dense(3, dtype="mixed_float16"))
    np.testing.assert_allclose(models.load_model(model).keras_model(x), model(x), atol=2e-2)


def test_mixed_precision_copy_under_a_mixed_global_policy_and_nested_models():
    # As in a training script: the global policy is still mixed when convert runs.
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("mixed_float16")
    try:
        inner = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(8)],
                                 name="inner")
        inp = keras.Input((20,), name="features")
        doubled = keras.layers.Lambda(lambda t: t * 2.0)(inner(inp))  # safe mode refuses
        model = keras.Model(inp, keras.layers.Dense(4, dtype="float32")(doubled))  # its config
        copy = models.load_model(model).keras_model
        assert keras.config.dtype_policy().name == "mixed_float16"  # restored
    finally:
        keras.config.set_dtype_policy("float32")
    assert copy is not model and not tfq8.mixed_precision.half_layers(copy)
    x = _features()
    np.testing.assert_allclose(copy(x), model(x), atol=2e-2)  # float16 rounding only
    report = tfq8.check(tfq8.convert(model, x), reference=model, data=x)
    assert report.outputs[0].sqnr_db > 30, str(report)


@pytest.mark.parametrize("framework", ["keras", "tf_keras"])
def test_mixed_precision_copy_reaches_the_layers_inside_wrappers(framework):
    # Bidirectional and TimeDistributed hold their layer's config, with its own
    # mixed policy: the copy used to keep a float16 LSTM inside a float32
    # Bidirectional, and the converter refused its float16 MatMuls.
    fw = pytest.importorskip(framework)
    set_policy = (fw.mixed_precision.set_global_policy if framework == "tf_keras"
                  else fw.config.set_dtype_policy)

    def build():
        fw.utils.set_random_seed(0)
        inp = fw.Input((3, 2), name="seq")
        h = fw.layers.Bidirectional(fw.layers.LSTM(3, return_sequences=True, unroll=True))(inp)
        h = fw.layers.TimeDistributed(fw.layers.Dense(3))(h)
        h = fw.layers.BatchNormalization()(h)  # tf_keras: its axis is a ListWrapper
        return fw.Model(inp, fw.layers.Dense(2, dtype="float32")(fw.layers.Flatten()(h)))

    set_policy("mixed_float16")
    try:
        model = build()
    finally:
        set_policy("float32")
    wrapped = {layer.name: layer.dtype_policy.name for layer in model.layers[1:3]}
    copy = models.load_model(model).keras_model
    assert not tfq8.mixed_precision.half_layers(copy)  # the LSTMs and Dense inside too
    assert {layer.name: layer.dtype_policy.name for layer in model.layers[1:3]} == wrapped
    x = np.random.default_rng(0).normal(size=(8, 3, 2)).astype(np.float32)
    blob = tfq8.convert(model, x, method="minmax")
    assert tfq8.inspect(blob).full_integer
    rebuilt = build()
    rebuilt.set_weights(model.get_weights())
    assert _int8_outputs(blob, x) == _int8_outputs(tfq8.convert(rebuilt, x, method="minmax"), x)


@pytest.mark.parametrize("framework", ["keras", "tf_keras"])
def test_mixed_precision_copy_of_an_adapted_normalization_layer(framework):
    # Normalization computes with tensors derived from its weights by finalize_state(),
    # which set_weights does not call: the copy normalized with mean 0 and variance 1.
    fw = pytest.importorskip(framework)
    x = _features(features=4) * 3.0 + 5.0
    norm = fw.layers.Normalization(dtype="mixed_float16")
    norm.adapt(x)
    inp = fw.Input((4,), name="features")
    model = fw.Model(inp, fw.layers.Dense(2, dtype="float32")(norm(inp)))
    copy = models.load_model(model).keras_model
    assert copy is not model
    np.testing.assert_allclose(copy(x), model(x), atol=2e-2)
    model.layers[1].adapt(x * 2.0)  # new statistics reach the copy too
    np.testing.assert_allclose(models.load_model(model).keras_model(x), model(x), atol=2e-2)


def test_mixed_precision_sequential_built_by_build():
    # build() under the mixed policy gives the Sequential a float16 input and no
    # `model.input` (never called): the copy kept the float16 input, and the
    # converter's CAST from it stayed float.
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.layers.Dense(32, activation="gelu"),
                                  keras.layers.Dense(5, dtype="float32")])  # factories.mlp
        model.build((None, 20))
    finally:
        keras.config.set_dtype_policy("float32")
    data = _features()
    blob = tfq8.convert(model, data, method="minmax")
    assert tfq8.inspect(blob).full_integer
    rebuilt = factories.mlp()
    rebuilt.set_weights(model.get_weights())
    assert _int8_outputs(blob, data) == _int8_outputs(
        tfq8.convert(rebuilt, data, method="minmax"), data)


def test_mixed_precision_subclassed_model_converts_when_its_config_rebuilds_it():
    class Net(keras.Model):
        def __init__(self, units=8, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.hidden = keras.layers.Dense(units, activation="relu")
            self.head = keras.layers.Dense(2, dtype="float32")

        def call(self, x):
            return self.head(self.hidden(x))

    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("mixed_float16")  # its layers take the global policy
    try:
        model = Net(units=8)
        model(np.zeros((1, 4), np.float32))
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.hidden.compute_dtype == "float16"
    x = _features(features=4)
    rebuilt = Net(units=8)  # what a user would do by hand, under float32
    rebuilt(x[:1])
    rebuilt.set_weights(model.get_weights())
    blob = tfq8.convert(model, x, method="minmax")
    assert tfq8.inspect(blob).full_integer
    assert _int8_outputs(blob, x) == _int8_outputs(tfq8.convert(rebuilt, x, method="minmax"), x)
    assert model.hidden.compute_dtype == "float16"  # the user's model is left as it was
    # The copy's layers carry the model's names, so the .tflite is the one the model's
    # own float32 twin gives, whatever layers the process had made before.
    for layer, name in ((rebuilt, model.name), (rebuilt.hidden, model.hidden.name),
                        (rebuilt.head, model.head.name)):
        layer.name = name
    assert blob == tfq8.convert(rebuilt, x, method="minmax")


def test_mixed_precision_functional_subclass_keeps_its_call():
    # A functional subclass that overrides call and builds its graph in __init__:
    # clone_model made a plain functional model of the graph, so the copy (and the
    # int8 model, and check's reference) left out the "* 2.0" without a word.
    class Doubled(keras.Model):
        def __init__(self, units=4, **kwargs):
            inp = keras.Input((20,))
            super().__init__(inp, keras.layers.Dense(2, dtype="float32")(
                keras.layers.Dense(units)(inp)), **kwargs)
            self.units = units

        def call(self, x):
            return super().call(x) * 2.0

    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = Doubled()
    finally:
        keras.config.set_dtype_policy("float32")
    copy = models.load_model(model).keras_model
    assert type(copy) is Doubled and not tfq8.mixed_precision.half_layers(copy)
    x = _features()
    np.testing.assert_allclose(copy(x), model(x), atol=2e-2)


def test_mixed_precision_subclassed_model_is_refused_with_the_fix():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(8, dtype="mixed_float16")
            self.out = keras.layers.Dense(2, dtype="float32")

        def call(self, x):
            return self.out(self.hidden(x))

    model = Net()
    model(np.zeros((1, 4), np.float32))
    with pytest.raises(tfq8.UnsupportedOpError,
                       match=r"^The model computes in float16 \(layers 'dense\w*' use the dtype "
                             r"policy 'mixed_float16'\).*could not make a float32 copy.*"
                             r"set_dtype_policy\('float32'\).*set_weights"):
        tfq8.convert(model, np.zeros((4, 4), np.float32))


def test_mixed_precision_tf_keras_converts_and_saved_model_is_refused(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(0)
    inner = tf_keras.Sequential([tf_keras.layers.Dense(8, activation="relu",
                                                       dtype="mixed_float16")])
    inp = tf_keras.Input((4,))
    tfk = tf_keras.Model(inp, tf_keras.layers.Dense(2, dtype="mixed_float16")(inner(inp)))
    copy = models.load_model(tfk).keras_model
    assert not tfq8.mixed_precision.half_layers(copy)  # the nested model's layers too
    x = _features(features=4)
    np.testing.assert_allclose(copy(x), tfk(x), atol=2e-2)
    assert tfq8.inspect(tfq8.convert(tfk, x)).full_integer
    # A SavedModel has no Keras layers to copy: the converter's float16 tensors are recognized.
    folder = tmp_path / "half"
    _half_precision_mlp().export(str(folder), verbose=False)
    with pytest.raises(tfq8.UnsupportedOpError,
                       match=r"^The model computes in float16 \(ops .*MatMul.*\).*'mixed_float16'"):
        models.load_model(str(folder))


def test_lambda_keras_file_keeps_the_safe_mode_advice(tmp_path):
    path = str(tmp_path / "lambda.keras")
    keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2.0),
                      keras.layers.Dense(2)]).save(path)
    with pytest.raises(ValueError) as info:
        models.load_model(path)
    message = str(info.value)
    assert "`Lambda` layer" in message
    assert "passing `safe_mode=False` to the loading function, or calling" in message  # not cut
    assert f"keras.saving.load_model({path!r}, safe_mode=False)" in message
    assert "tf_keras" not in message and "InputLayer" not in message
    # The advice works.
    handle = models.load_model(keras.saving.load_model(path, safe_mode=False))
    assert [s.shape for s in handle.specs] == [(None, 4)]


@pytest.mark.parametrize("name", ["mlp.weights.h5", "mlp.h5"])
def test_a_weights_only_file_says_how_to_load_it(tmp_path, name):
    # "Could not load the model file. Tried: keras: ValueError: No model config found ..."
    model = factories.mlp()
    model.save_weights(tmp_path / "mlp.weights.h5")
    if name != "mlp.weights.h5":
        (tmp_path / "mlp.weights.h5").rename(tmp_path / name)
    with pytest.raises(ValueError, match=r"^model file holds weights only, no model .*"
                                         r"model\.load_weights\(path\), and pass the model\. "
                                         rf"Received: model='.*{name}'$"):
        tfq8.convert(str(tmp_path / name), np.zeros((4, 20), np.float32))
