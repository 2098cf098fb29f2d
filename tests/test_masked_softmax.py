"""tfq8.masked_softmax: the masks of a masked softmax, which TFLite's int8 grid spans, become
a moderate fill."""

import numpy as np
import pytest
import tf_keras

import keras
import tfq8
from tfq8 import _tflite
from tfq8.pipeline import converter_int8
from tfq8.rewrite import rewrite_for_int8

_T, _D = 8, 16  # keys, width


def _lengths(rng, n):
    return np.arange(_T)[None, :] < rng.integers(2, _T + 1, (n, 1))  # (n, T): valid keys


def _seeded(model, seed: int = 0, query_gain: float = 1.0):
    """`model` with weights drawn from `seed` (tf_keras' own initial weights depend on what
    the process built before), its queries' kernel `query_gain` times larger."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        gain = query_gain if "query" in getattr(w, "path", w.name) else 1.0
        shape = tuple(w.shape)
        w.assign(np.zeros(shape, np.float32) if len(shape) < 2 else
                 (rng.normal(size=shape) * gain / np.sqrt(shape[0])).astype(np.float32))
    return model


def _attention(K):
    """`Attention()([q, v], mask=[None, value_mask])` of Keras 3 or tf_keras (no weights)."""
    q, v = K.Input((_T, _D), name="q"), K.Input((_T, _D), name="v")
    valid = K.Input((_T,), dtype="bool", name="valid")
    a = K.layers.Attention()([q, v], mask=[None, valid])
    model = K.Model([q, v, valid], K.layers.GlobalAveragePooling1D()(a))

    def data(rng, n):  # by name: the TFLite graph orders its inputs its own way
        return {"q": rng.normal(size=(n, _T, _D)).astype(np.float32),
                "v": rng.normal(size=(n, _T, _D)).astype(np.float32), "valid": _lengths(rng, n)}
    return model, data


def _tf_keras_mha(causal: bool, seed: int = 0):
    """tf_keras `MultiHeadAttention` with a boolean `attention_mask` or a causal mask, its
    queries scaled up (sharp attention, which one code for every score would ruin)."""
    K = tf_keras
    tokens = K.Input((_T, _D), name="tokens")
    mask = None if causal else K.Input((_T, _T), dtype="bool", name="mask")
    a = K.layers.MultiHeadAttention(2, 8)(tokens, tokens, use_causal_mask=causal,
                                          attention_mask=mask)
    inputs = [tokens] if causal else [tokens, mask]
    pooled = K.layers.GlobalAveragePooling1D()(tokens + a)
    model = _seeded(K.Model(inputs, K.layers.Dense(3)(pooled)), seed, query_gain=4.0)

    def data(rng, n):
        x = rng.normal(size=(n, _T, _D)).astype(np.float32)
        return x if causal else {"tokens": x,
                                 "mask": np.repeat(_lengths(rng, n)[:, None, :], _T, axis=1)}
    return model, data


_MODELS = {  # the mask each lowers to
    "keras Attention(mask)": lambda: _attention(keras),  # SELECT(padding, scores - 1e9, scores)
    "tf_keras Attention(mask)": lambda: _attention(tf_keras),  # scores - 1e9 * CAST(padding)
    # scores + (1 - CAST(mask)) * -1e9; a constant of 0s and -1e9s, then a TRANSPOSE
    "tf_keras MultiHeadAttention(attention_mask=bool)": lambda: _tf_keras_mha(False),
    "tf_keras MultiHeadAttention(use_causal_mask=True)": lambda: _tf_keras_mha(True),
}


@pytest.mark.parametrize("name", list(_MODELS))
def test_masks_of_attention_layers_become_a_moderate_fill(name):
    model, data = _MODELS[name]()
    rng = np.random.default_rng(0)
    x, held = data(rng, 128), data(rng, 128)
    calib = tfq8.calibrate(model, x)
    fills = calib._fills
    assert fills and len({v for v in fills.values()}) == 1  # (and a TRANSPOSE's output)
    scores, fill = next(iter(fills.values()))
    lo, hi = calib.converter_ranges()[scores]  # the scores' own, whatever the calibrator logged
    assert (lo, hi) == (calib.tensor(scores).histogram.min, calib.tensor(scores).histogram.max)
    assert -1e3 < lo and fill == pytest.approx(lo - np.log(512 * _T), abs=1e-4)
    for method in ("minmax", "mse"):
        ranges = calib.ranges(method)
        assert all(ranges[out] == (fill, ranges[scores][1]) for out in fills)
    assert rewrite_for_int8(calib.model) is calib.model
    # The float model with the fill computes what the Keras model does (masked keys 1/512).
    float_model = _tflite.convert_float(tfq8.models.load_model(model).converter())
    assert tfq8.check(calib.model, reference=float_model, data=held).outputs[0].sqnr_db > 45
    theirs = tfq8.check(converter_int8(model, x), reference=float_model, data=held)
    for method in ("minmax", "auto"):
        blob = tfq8.convert(calibration=calib, method=method)
        ours = tfq8.check(blob, reference=float_model, data=held).outputs[0].sqnr_db
        assert tfq8.inspect(blob).full_integer and ours > 24, (method, ours)
        assert ours > theirs.outputs[0].sqnr_db + 10, (method, ours, theirs.outputs[0].sqnr_db)


def test_a_float_mask_added_to_the_scores_stays():
    """tf_keras' `scores + (1 - mask) * -1e9` of a float `attention_mask` input: a mask value
    between 0 and 1 (or above) weighs the scores in a way no moderate fill reproduces."""
    K = tf_keras
    K.utils.set_random_seed(0)
    tokens, mask = K.Input((_T, _D)), K.Input((_T, _T))
    a = K.layers.MultiHeadAttention(2, 8)(tokens, tokens, attention_mask=mask)
    model = K.Model([tokens, mask], K.layers.Dense(3)(K.layers.GlobalAveragePooling1D()(a)))
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(64, _T, _D)).astype(np.float32),
         np.repeat(_lengths(rng, 64)[:, None, :], _T, axis=1).astype(np.float32)]
    calib = tfq8.calibrate(model, x)
    assert not calib._fills and rewrite_for_int8(calib.model) is calib.model
    parsed = _tflite.read_model(calib.model)
    sg = parsed.subgraphs[0]
    softmax = next(op for op in sg.operators if _tflite.op_name(parsed, op) == "SOFTMAX")
    add = next(op for op in sg.operators if softmax.inputs[0] in op.outputs)
    assert _tflite.op_name(parsed, add) == "ADD"
    # TFLite's calibrator logs the scores after the in-place ADD wrote the mask over them;
    # they keep their own range.
    ranges = calib.converter_ranges()
    assert ranges[int(add.inputs[0])][0] > -1e3 and ranges[int(add.outputs[0])][0] <= -1e9


def test_other_adds_before_a_softmax_stay():
    """An ADD of a constant that is not a mask (a 0.5 among the -1e9s), and a residual ADD,
    before softmaxes: the same bytes."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((_T,))
    offset = np.zeros(_T, np.float32)
    offset[:2], offset[2] = -1e9, 0.5
    h = keras.layers.Dense(_T)(inp)
    shifted = keras.layers.Softmax()(keras.layers.Lambda(lambda t: t + offset)(h))
    residual = keras.layers.Softmax()(h + keras.layers.Dense(_T)(h))
    model = keras.Model(inp, keras.layers.Concatenate()([shifted, residual]))
    x = np.random.default_rng(0).normal(size=(32, _T)).astype(np.float32)
    calibrated = _tflite.calibrate_only(tfq8.models.load_model(model).converter(),
                                        tfq8.representative_dataset(x, model=model))
    assert rewrite_for_int8(calibrated) is calibrated


def _masked_attention(seq: int = 8, width: int = 16):
    keras.utils.set_random_seed(0)
    tokens, mask = keras.Input((seq, width)), keras.Input((seq, seq))
    a = keras.layers.MultiHeadAttention(2, 8)(tokens, tokens, attention_mask=mask)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(tokens + a))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(320, seq, width)).astype(np.float32)
    lengths = rng.integers(2, seq + 1, size=len(x))
    m = np.broadcast_to(np.arange(seq)[None, None, :] < lengths[:, None, None],
                        (len(x), seq, seq)).astype(np.float32)
    return keras.Model([tokens, mask], out), [x, m]


def test_a_masked_softmax_fills_masked_scores_with_a_moderate_value():
    """Keras' masked softmax fills masked scores with -2.4e38, which TFLite's int8 grid then
    spans: every real score rounds to one code (the converter's model too)."""
    model, (x, m) = _masked_attention()
    calib = tfq8.calibrate(model, [x[:160], m[:160]])
    (out, (scores, fill)), = calib._fills.items()
    lo, hi = _tflite.calibrated_ranges(calib.model)[scores]
    assert fill == pytest.approx(lo - np.log(512 * 8), abs=1e-4)
    assert _tflite.calibrated_ranges(calib.model)[out][0] == pytest.approx(fill)
    for method in ("minmax", "percentile", "mse"):  # every method's range reaches the fill
        ranges = calib.ranges(method)
        assert ranges[out] == (fill, ranges[scores][1])
    held = [x[160:], m[160:]]
    theirs = tfq8.check(converter_int8(model, [x[:160], m[:160]]), reference=model, data=held)
    for method in ("minmax", "auto"):
        blob = tfq8.convert(calibration=calib, method=method)
        ours = tfq8.check(blob, reference=model, data=held).outputs[0].sqnr_db
        assert tfq8.inspect(blob).full_integer and ours > 20
        assert ours > theirs.outputs[0].sqnr_db + 10, (method, ours, theirs.outputs[0].sqnr_db)
