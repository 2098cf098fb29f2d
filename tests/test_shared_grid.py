"""tfq8.shared_grid: one range for the tensors TFLite's quantizer must put on one int8 grid,
where it refuses their own ranges (a masked SimpleRNN), and nothing changed where it does not."""

import logging

import numpy as np
import pytest
import tensorflow as tf

import keras
import tfq8
from tfq8 import _tflite
from tfq8.pipeline import converter_int8
from tfq8.shared_grid import SHARED_GRID_OPS, Quantizer, shared_grid_groups, tie_ranges

METHODS = ("minmax", "percentile", "kl", "mse", "auto")


def _tokens(n: int, seed: int, steps: int = 10, vocab: int = 50) -> np.ndarray:
    """Token ids padded with 0 to random lengths of 3 to `steps`."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (n, steps)).astype(np.int32)
    ids[np.arange(steps)[None] >= rng.integers(3, steps + 1, (n, 1))] = 0
    return ids


def _masked_rnn(seed: int = 0, return_sequences: bool = False):
    """Embedding(mask_zero=True) -> SimpleRNN(16, unroll=True) -> Dense(4); with
    `return_sequences`, a masked average over the steps before the Dense."""
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((10,), dtype="int32")
    h = keras.layers.SimpleRNN(16, unroll=True, return_sequences=return_sequences)(
        keras.layers.Embedding(50, 8, mask_zero=True)(tokens))
    if return_sequences:
        h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(tokens, keras.layers.Dense(4)(h))


@pytest.fixture(scope="module")
def rnn():
    model = _masked_rnn()
    return model, tfq8.calibrate(model, _tokens(128, 0))


def _grids(blob: bytes, op: str, within: str = "") -> set:
    """(scale, zero point) of the int8 outputs of every `op` in a quantized model (whose
    names hold `within`)."""
    return {(t.scale, t.zero_point) for o in tfq8.inspect(blob).ops if o.name == op
            for t in o.outputs if t.scale and within in t.name}


@pytest.mark.parametrize("return_sequences", [False, True])
def test_a_masked_simple_rnn_quantizes_where_the_converter_fails(return_sequences):
    # At each step the TANH output feeds two SELECT_V2 (new or old state, new or old output);
    # the quantizer cannot requantize it for both. With return_sequences the steps' outputs
    # also reach the masked pooling's SELECT_V2 through a PACK and a TRANSPOSE.
    model = _masked_rnn(return_sequences=return_sequences)
    x, held = _tokens(128, 0), _tokens(500, 1)
    with pytest.raises(RuntimeError):  # TFLite's own converter: an empty RuntimeError
        converter_int8(model, x)
    calib = tfq8.calibrate(model, x)
    with pytest.raises(_tflite.SameScaleError):  # the calibrated ranges as they are
        _tflite.quantize(calib.model)
    for method in METHODS:
        blob = tfq8.convert(calibration=calib, method=method)
        assert tfq8.inspect(blob).full_integer
        assert len(_grids(blob, "SELECT_V2", "simple_rnn")) == 1, method  # one, every step
        db = tfq8.check(blob, reference=model, data=held).outputs[0].sqnr_db
        # TFLite's int8 TANH output has the fixed scale 1/128, on which these small states
        # (|h| < 0.25) reach 19-21 dB, as the same model without the mask does from TFLite's
        # converter (19.1 dB).
        assert db > 17, (method, db)


def test_one_group_holds_the_states_of_every_step(rnn):
    model, calib = rnn
    groups = shared_grid_groups(calib.model)
    producers = {t.index: t.producer for t in calib.tensors}
    assert len(groups) == 1
    kinds = [producers.get(t) for t in groups[0]]
    assert kinds.count("TANH") == 10 and kinds.count("SELECT_V2") == 19
    # auto reports the ranges the model was quantized with: the group's one range.
    tfq8.convert(calibration=calib)
    assert len({calib.last_auto.ranges[t] for t in groups[0]}) == 1


def test_tied_ranges_quantize_as_they_are(rnn):
    model, calib = rnn
    ranges = calib.ranges("minmax")
    blob, used = Quantizer(calib.model)(ranges)
    assert used != ranges
    assert used == tie_ranges(used, shared_grid_groups(calib.model))  # already agree
    again, same = Quantizer(calib.model)(used)  # accepted as they are: no second tie
    assert again == blob and same == used


def test_a_range_set_by_hand_is_kept_and_its_group_follows(rnn, caplog):
    model, calib = rnn
    selects = [t.name for t in calib.tensors if t.producer == "SELECT_V2"]
    blob = tfq8.convert(calibration=calib, method="minmax", ranges={selects[-1]: (-0.5, 0.5)})
    (grid,) = _grids(blob, "SELECT_V2")
    assert grid[0][0] == pytest.approx(1 / 255, rel=1e-6)
    # Two different ranges in one group: both become their union, and a warning says so.
    with caplog.at_level(logging.WARNING, logger="tfq8"):
        blob = tfq8.convert(calibration=calib, method="minmax",
                            ranges={selects[0]: (-0.5, 0.5), selects[-1]: (-0.3, 0.7)})
    (grid,) = _grids(blob, "SELECT_V2")
    assert grid[0][0] == pytest.approx(1.2 / 255, rel=1e-6)
    assert "became (-0.5, 0.7)" in caplog.text and repr(selects[0]) in caplog.text


def _fan_out(op: str):
    """A TANH output read by two `op` ops: model and data."""
    same = {
        "SELECT_V2": lambda c, a, b: tf.where(c, a, b),
        "SELECT": lambda c, a, b: tf.raw_ops.Select(condition=c, x=a, y=b),
        "CONCATENATION": lambda c, a, b: tf.concat([a, b], -1),
        "MAXIMUM": lambda c, a, b: tf.maximum(a, b),
        "MINIMUM": lambda c, a, b: tf.minimum(a, b),
        "PACK": lambda c, a, b: tf.stack([a, b], 1),
    }[op]
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    dense = [keras.layers.Dense(6)(inp) for _ in range(3)]

    def both(t):
        a = tf.tanh(t[0])
        return [same(t[3] > 0, a, t[1]), same(t[3] < 0.5, a, t[2])]

    outs = keras.layers.Lambda(both)([*dense, inp])
    model = keras.Model(inp, [keras.layers.Dense(2)(keras.layers.Flatten()(o)) for o in outs])
    return model, np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)


@pytest.mark.parametrize("op", SHARED_GRID_OPS)
def test_a_fixed_scale_output_read_by_two_such_ops_quantizes(op):
    model, x = _fan_out(op)
    calib = tfq8.calibrate(model, x)
    assert op in {t.producer for t in calib.tensors}
    with pytest.raises(_tflite.SameScaleError):
        _tflite.quantize(calib.model)
    blob = tfq8.convert(calibration=calib, method="minmax")
    assert tfq8.inspect(blob).full_integer and len(_grids(blob, op)) == 1
    assert min(o.sqnr_db for o in tfq8.check(blob, reference=model, data=x).outputs) > 25


def _where_model():
    """`ops.where` between two Dense outputs: the quantizer gives them one grid itself."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    picked = keras.layers.Lambda(lambda t: keras.ops.where(t[2] > 0, t[0], t[1]))(
        [keras.layers.Dense(6)(inp), keras.layers.Dense(6, activation="relu")(inp), inp])
    return (keras.Model(inp, keras.layers.Dense(2)(picked)),
            np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32))


def test_a_model_the_quantizer_accepts_keeps_its_ranges():
    model, x = _where_model()
    calib = tfq8.calibrate(model, x)
    ranges = calib.ranges("minmax")
    groups = shared_grid_groups(calib.model)
    assert groups and tie_ranges(ranges, groups) != ranges  # a tie would change them
    blob = tfq8.convert(calibration=calib, method="minmax")
    assert blob == converter_int8(model, x)  # the converter's own model, byte for byte
