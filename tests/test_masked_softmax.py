"""tfq8.masked_softmax: the masks of a masked softmax, which TFLite's int8 grid spans, become
a moderate fill."""

import numpy as np
import tf_keras

import tfq8
from tfq8 import _tflite
from tfq8.rewrite import rewrite_for_int8

_T, _D = 8, 16  # keys, width


def _lengths(rng, n):
    return np.arange(_T)[None, :] < rng.integers(2, _T + 1, (n, 1))  # (n, T): valid keys


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
