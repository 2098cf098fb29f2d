"""tfq8.rewrite: float ops TFLite's quantizer leaves in float (NEG, SQUARE), rewritten so that it
does not."""

import numpy as np
import pytest
import tensorflow as tf

import keras
import tfq8
from tfq8 import _graph, _tflite
from tfq8.harness.interpreter import ModelRunner
from tfq8.pipeline import converter_int8
from tfq8.rewrite import int8_islands, rewrite_for_int8


def _layer_norm_model(seed: int = 0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((12,)), keras.layers.Dense(16),
                             keras.layers.LayerNormalization(), keras.layers.Dense(3)])


def _group_norm_model(seed: int = 0):
    keras.utils.set_random_seed(seed)
    i = keras.Input((6, 6, 8))
    x = keras.layers.GroupNormalization(2)(keras.layers.Conv2D(8, 3, padding="same")(i))
    x = keras.layers.UnitNormalization()(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(i, keras.layers.Dense(3)(x))


_MODELS = {  # model, input shape, the op it lowers to that the quantizer leaves float
    "LayerNormalization": (_layer_norm_model, (12,), "NEG"),
    "GroupNormalization, UnitNormalization": (_group_norm_model, (6, 6, 8), "SQUARE"),
}


def _ops(blob: bytes) -> list[str]:
    parsed = _tflite.read_model(blob)
    return [_tflite.op_name(parsed, op) for op in parsed.subgraphs[0].operators]


@pytest.mark.parametrize("layers", list(_MODELS))
def test_rewrite_for_int8_computes_the_same_float_model(layers):
    factory, shape, op = _MODELS[layers]
    model = factory()
    float_model = bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    assert op in _ops(float_model)  # what the Keras layers lower to
    rewritten = rewrite_for_int8(float_model)
    assert op not in _ops(rewritten) and _ops(rewritten).count("MUL") > _ops(float_model).count("MUL")
    x = np.random.default_rng(0).normal(size=(32, *shape)).astype(np.float32)
    np.testing.assert_array_equal(ModelRunner(rewritten).run([x])[0],
                                  ModelRunner(float_model).run([x])[0])
    assert rewrite_for_int8(rewritten) is rewritten  # nothing left to rewrite: the same bytes


def test_a_calibration_made_before_the_rewrite_gets_it():
    model = _layer_norm_model()
    x = np.random.default_rng(1).normal(size=(32, 12)).astype(np.float32)
    calib = tfq8.calibrate(model, x)
    with_neg = _tflite.calibrate_only(tfq8.models.load_model(model).converter(),
                                      tfq8.representative_dataset(x, model=model))
    assert "NEG" in _ops(with_neg)
    old = tfq8.Calibration(with_neg, calib.tensors, calib.num_samples, calib.fingerprint)
    assert old.model == calib.model and "NEG" not in _ops(old.model)
    assert "NEG" not in {t.producer for t in old.tensors} | {t.producer for t in calib.tensors}


@pytest.mark.parametrize("layers,method", [(layers, method) for layers in _MODELS
                                           for method in ("minmax", "auto")])
def test_normalization_layers_quantize_to_a_full_integer_model(layers, method):
    factory, shape, op = _MODELS[layers]
    model = factory()
    x = np.random.default_rng(1).normal(size=(128, *shape)).astype(np.float32)
    blob = tfq8.convert(model, x, method=method)  # no allow_float needed
    assert tfq8.inspect(blob).full_integer and op not in _ops(blob)
    ours = tfq8.check(blob, reference=model, data=x).outputs[0].sqnr_db
    # TFLite's own converter keeps the op in float between DEQUANTIZE and QUANTIZE.
    theirs = tfq8.check(converter_int8(model, x), reference=model, data=x).outputs[0].sqnr_db
    assert ours > 25 and ours > theirs - 0.5


def _masked_models():
    """Keras masking and a cast comparison: model, data and the float op it lowers to."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((10,), dtype="int32")
    emb = keras.layers.Embedding(20, 4, mask_zero=True)(tokens)
    pooled = keras.Model(tokens, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(emb)))
    recurrent = keras.Model(tokens, keras.layers.Dense(2)(keras.layers.LSTM(4, unroll=True)(emb)))
    inp = keras.Input((6,))
    step = keras.layers.Lambda(lambda t: keras.ops.cast(t > 0.0, "float32"))(keras.layers.Dense(6)(inp))
    stepped = keras.Model(inp, keras.layers.Dense(2)(step))
    frames = keras.Input((10, 3))
    masked = keras.layers.Dense(4)(keras.layers.Masking()(frames))
    padded = keras.Model(frames, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(masked)))
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 20, (64, 10)).astype(np.int32)
    ids[np.arange(10)[None, :] >= rng.integers(3, 11, (64, 1))] = 0  # padded sequences
    signals = rng.normal(size=(64, 10, 3)).astype(np.float32)
    signals[ids == 0] = 0.0  # padded frames
    return {"Embedding(mask_zero=True), pooled": (pooled, ids, "CAST"),
            "Masking, pooled": (padded, signals, "NOT_EQUAL"),
            "Embedding(mask_zero=True), LSTM": (recurrent, ids, "ZEROS_LIKE"),
            "ops.cast(x > 0)": (stepped, rng.normal(size=(64, 6)).astype(np.float32), "CAST")}


@pytest.mark.parametrize("name", list(_masked_models()))
def test_masking_ops_become_int8_ones(name):
    model, x, op = _masked_models()[name]
    float_model = bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    assert op in _ops(float_model)
    rewritten = rewrite_for_int8(float_model)
    assert op not in _ops(rewritten)
    np.testing.assert_array_equal(ModelRunner(rewritten).run([x])[0],
                                  ModelRunner(float_model).run([x])[0])
    # The converter's int8 model keeps the op float; tfq8's is full-integer, as accurate.
    theirs = converter_int8(model, x)
    assert not tfq8.inspect(theirs).full_integer
    theirs_db = tfq8.check(theirs, reference=model, data=x).outputs[0].sqnr_db
    for method in ("minmax", "auto"):
        blob = tfq8.convert(model, x, method=method)
        assert tfq8.inspect(blob).full_integer
        ours_db = tfq8.check(blob, reference=model, data=x).outputs[0].sqnr_db
        assert ours_db > 15 and ours_db > theirs_db - 0.5, (method, ours_db, theirs_db)


def _one_hot_models():
    """Models with a float one-hot of int inputs: model and data."""
    keras.utils.set_random_seed(0)
    ids = keras.Input((3,), dtype="int32")
    flat = keras.layers.Flatten()(keras.layers.Lambda(lambda t: keras.ops.one_hot(t, 6))(ids))
    encoded = keras.Model(ids, keras.layers.Dense(2)(flat))
    category, features = keras.Input((), dtype="int32", name="category"), keras.Input((4,), name="features")
    mixed = keras.layers.Concatenate()([keras.layers.Lambda(lambda t: keras.ops.one_hot(t, 5))(category),
                                        features])
    tabular = keras.Model([category, features],
                          keras.layers.Dense(2)(keras.layers.Dense(8, "relu")(mixed)))
    rng = np.random.default_rng(0)
    return {"ops.one_hot": (encoded, rng.integers(0, 6, (64, 3)).astype(np.int32)),
            "ops.one_hot and features": (tabular, [rng.integers(0, 5, (64,)).astype(np.int32),
                                                   rng.normal(size=(64, 4)).astype(np.float32)])}


@pytest.mark.parametrize("name", list(_one_hot_models()))
def test_one_hot_keeps_its_zeros_in_int8(name):
    model, x = _one_hot_models()[name]
    float_model = bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    rewritten = rewrite_for_int8(float_model)
    assert _ops(rewritten).count("ONE_HOT") == _ops(float_model).count("ONE_HOT") == 1
    assert "SELECT_V2" in _ops(rewritten) and "SELECT_V2" not in _ops(float_model)
    data = x if isinstance(x, list) else [x]
    if len(data) > 1:  # the runner orders the inputs its own way
        names = [t.name for t in ModelRunner(float_model).inputs]
        data = [data[0] if "category" in n else data[1] for n in names]
    np.testing.assert_array_equal(ModelRunner(rewritten).run(data)[0],
                                  ModelRunner(float_model).run(data)[0])
    assert rewrite_for_int8(rewritten) is rewritten
    # The converter's int8 ONE_HOT quantizes its off value 0.0 on a grid of its own (code 0),
    # which the output's [0, 1] grid (zero point -128) reads as 0.5: a full-integer model
    # that is wrong. tfq8's puts 0 and 1 on the output's grid.
    theirs = converter_int8(model, x)
    assert tfq8.inspect(theirs).full_integer
    theirs_db = tfq8.check(theirs, reference=model, data=x).outputs[0].sqnr_db
    for method in ("minmax", "auto"):
        blob = tfq8.convert(model, x, method=method)
        assert tfq8.inspect(blob).full_integer
        ours_db = tfq8.check(blob, reference=model, data=x).outputs[0].sqnr_db
        assert ours_db > 30 and theirs_db < 15, (method, ours_db, theirs_db)


def _float_mask_models():
    """A float mask (1s and 0s) that Keras casts to bool: model, data (a list, in the Keras
    model's input order)."""
    keras.utils.set_random_seed(0)
    frames, mask = keras.Input((10, 8), name="frames"), keras.Input((10,), name="mask")
    pairs = keras.layers.Lambda(lambda t: keras.ops.expand_dims(t, 1))(mask)
    attended = keras.layers.MultiHeadAttention(2, 4)(frames, frames, attention_mask=pairs)
    attention = keras.Model([frames, mask], keras.layers.Dense(2)(
        keras.layers.GlobalAveragePooling1D()(attended)))
    kept = keras.layers.Lambda(lambda t: keras.ops.where(keras.ops.expand_dims(t[1], -1), t[0], 0.0))(
        [keras.layers.Dense(4)(frames), mask])
    pooled = keras.Model([frames, mask], keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(kept)))
    rng = np.random.default_rng(0)
    valid = (np.arange(10)[None, :] < rng.integers(3, 11, (64, 1))).astype(np.float32)
    signals = rng.normal(size=(64, 10, 8)).astype(np.float32) * valid[..., None]
    return {"MultiHeadAttention(attention_mask=float input)": (attention, [signals, valid]),
            "ops.where(float mask)": (pooled, [signals, valid])}


@pytest.mark.parametrize("name", list(_float_mask_models()))
def test_a_float_mask_cast_to_bool_becomes_int8_comparisons(name):
    model, x = _float_mask_models()[name]
    float_model = bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    assert "CAST" in _ops(float_model)
    rewritten = rewrite_for_int8(float_model)
    assert "CAST" not in _ops(rewritten) and {"LESS", "GREATER", "LOGICAL_OR"} <= set(_ops(rewritten))
    names = [t.name for t in ModelRunner(float_model).inputs]
    data = [x[1] if "mask" in n else x[0] for n in names]  # the runner's order
    np.testing.assert_array_equal(ModelRunner(rewritten).run(data)[0],
                                  ModelRunner(float_model).run(data)[0])
    theirs = converter_int8(model, x)
    assert [op.name for op in tfq8.inspect(theirs).culprits] == ["CAST"]
    theirs_db = tfq8.check(theirs, reference=model, data=x).outputs[0].sqnr_db
    blob = tfq8.convert(model, x, method="minmax")
    assert tfq8.inspect(blob).full_integer
    ours_db = tfq8.check(blob, reference=model, data=x).outputs[0].sqnr_db
    if "attention" in name:  # its masked softmax's fill is moderate too: far better
        assert ours_db > theirs_db + 10, (ours_db, theirs_db)
    else:  # the same comparison on the same int8 values: the converter's accuracy, to rounding
        assert ours_db == pytest.approx(theirs_db, abs=0.05)


@pytest.mark.parametrize("backend", ["builtin", "xnnpack"])
def test_an_elu_runs_in_int8_between_its_neighbours(backend):
    """TFLite's quantizer leaves ELU float (DEQUANTIZE -> ELU -> QUANTIZE), in its own
    model too; LiteRT's ELU takes int8 (a lookup table from the two grids)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, activation="elu")(inp)
    h = keras.layers.Dense(16, activation="elu")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, keras.layers.Dense(3)(h))
    rng = np.random.default_rng(0)
    x, held = (rng.normal(size=(n, 8, 8, 3)).astype(np.float32) for n in (64, 200))
    theirs = converter_int8(model, x)
    assert _ops(theirs).count("DEQUANTIZE") == 2 and not tfq8.inspect(theirs).full_integer
    theirs_db = tfq8.check(theirs, reference=model, data=held, backend=backend).outputs[0].sqnr_db
    for method in ("minmax", "auto"):
        blob = tfq8.convert(model, x, method=method)  # no allow_float needed
        assert tfq8.inspect(blob).full_integer and _ops(blob).count("ELU") == 2
        assert "DEQUANTIZE" not in _ops(blob) and "QUANTIZE" not in _ops(blob)[1:]
        ours_db = tfq8.check(blob, reference=model, data=held, backend=backend).outputs[0].sqnr_db
        assert ours_db > 25 and ours_db > theirs_db - 0.3, (method, ours_db, theirs_db)


def test_an_elu_that_writes_the_model_output_runs_in_int8():
    """The QUANTIZE after the island writes the int8 model output: the ELU writes it itself,
    under the output's name. A float32 output stays refused, as documented."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), keras.layers.ELU()])
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    theirs = converter_int8(model, x)
    for output_type in ("int8", "uint8"):
        blob = tfq8.convert(model, x, method="minmax", output_type=output_type)
        info = tfq8.inspect(blob)
        assert info.full_integer and "DEQUANTIZE" not in _ops(blob), _ops(blob)
        assert [t.name for t in info.outputs] == [t.name for t in tfq8.inspect(theirs).outputs]
        assert tfq8.check(blob, reference=model, data=x).outputs[0].sqnr_db > 30
    with pytest.raises(tfq8.UnsupportedOpError, match=r"ELU"):
        tfq8.convert(model, x, output_type="float32")


def test_a_split_left_float_between_its_neighbours_runs_in_int8():
    """TFLite's quantizer now and then (one run in six) leaves the first SPLIT of an unrolled
    LSTM float, DEQUANTIZE -> SPLIT -> QUANTIZE onto the same grid, where the model also has
    a WHILE loop. Here that float SPLIT is made by hand, from the int8 model, as the
    quantizer makes it: its outputs keep their tensors, in float, and the QUANTIZEs write new
    ones. Its forget gate output is not read (the first state is 0), and gets no QUANTIZE.
    Closed, it is the int8 model again, byte for byte once both have dropped what they do
    not use."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 3), batch_size=1),  # (the first state folds)
                              keras.layers.LSTM(4, unroll=True), keras.layers.Dense(2)])
    x = np.random.default_rng(0).normal(size=(32, 4, 3)).astype(np.float32)
    blob = tfq8.convert(model, x, method="minmax")
    parsed = _tflite.read_model(blob)
    sg, types = parsed.subgraphs[0], _tflite.schema.TensorType
    split = next(op for op in sg.operators if _tflite.op_name(parsed, op) == "SPLIT")
    k = sg.operators.index(split)
    value = _graph.tensor_like(sg, sg.tensors[split.inputs[1]], "float", types.FLOAT32)
    sg.operators.insert(k, _graph.new_op(parsed, "DEQUANTIZE", [split.inputs[1]], value,
                                         _tflite.schema.DequantizeOptionsT()))
    split.inputs[1] = value
    read = {int(t) for op in sg.operators for t in op.inputs}
    assert not all(int(t) in read for t in split.outputs)
    for t in [int(t) for t in split.outputs if int(t) in read]:
        copy = _graph.tensor_like(sg, sg.tensors[t], "int8", types.INT8)
        _graph.set_int8(sg.tensors[copy], sg.tensors[t])
        for op in sg.operators:
            op.inputs = np.array([copy if int(i) == t else int(i) for i in op.inputs], np.int32)
        sg.operators.insert(k + 2, _graph.new_op(parsed, "QUANTIZE", [t], copy,
                                                 _tflite.schema.QuantizeOptionsT()))
    for t in split.outputs:
        sg.tensors[t].type, sg.tensors[t].quantization = types.FLOAT32, None
    islands = _tflite.write_model(parsed)
    assert [op.name for op in tfq8.inspect(islands).culprits] == ["SPLIT"]
    closed = int8_islands(islands)
    assert tfq8.inspect(closed).full_integer
    np.testing.assert_array_equal(ModelRunner(closed).run([x])[0], ModelRunner(blob).run([x])[0])
    parsed = _tflite.read_model(blob)
    _graph.drop_unused(parsed)
    assert closed == _tflite.write_model(parsed)
