"""tfq8.loops: WHILE loops (recurrent layers that are not unrolled) calibrate without
crashing TFLite's calibrator and carry their variables in int8."""

import numpy as np
import pytest
import tensorflow as tf

import keras
import tfq8
from tfq8 import _tflite
from tfq8.harness.interpreter import ModelRunner
from tfq8.loops import int8_loops, loop_states, scale_loop_states, split_loop_passthroughs
from tfq8.ranges import auto


def _rolled(layer: str = "GRU", seed: int = 0, stacked: bool = False):
    """A recurrent layer that is not unrolled, batch size fixed at 1: TFLite makes its loop
    a WHILE op whose body passes the input sequence through, on which TFLite's calibrator
    crashes."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 4), batch_size=1)
    rnn = getattr(keras.layers, layer)
    h = rnn(8, return_sequences=True)(inp) if stacked else inp
    return keras.Model(inp, keras.layers.Dense(3)(rnn(8)(h)))


def _subgraph_ops(blob: bytes) -> list[list[str]]:
    parsed = _tflite.read_model(blob)
    return [[_tflite.op_name(parsed, op) for op in sg.operators] for sg in parsed.subgraphs]


def _loop_body(blob: bytes):
    parsed = _tflite.read_model(blob)
    while_op = next(op for op in parsed.subgraphs[0].operators
                    if _tflite.op_name(parsed, op) == "WHILE")
    return parsed.subgraphs[while_op.builtinOptions.bodySubgraphIndex]


def test_split_loop_passthroughs_gives_each_a_tensor_and_computes_the_same():
    float_model = bytes(tf.lite.TFLiteConverter.from_keras_model(_rolled()).convert())
    body = _loop_body(float_model)
    assert set(body.inputs) & set(body.outputs)  # the calibrator's crash needs this
    split = split_loop_passthroughs(float_model)
    body = _loop_body(split)
    assert not set(body.inputs) & set(body.outputs)
    x = np.random.default_rng(0).normal(size=(1, 6, 4)).astype(np.float32)
    np.testing.assert_array_equal(ModelRunner(split).run([x])[0],
                                  ModelRunner(float_model).run([x])[0])
    assert split_loop_passthroughs(split) is split  # none left: the same bytes
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    no_loop = bytes(tf.lite.TFLiteConverter.from_keras_model(dense).convert())
    assert split_loop_passthroughs(no_loop) is no_loop and int8_loops(no_loop) is no_loop


@pytest.mark.parametrize("layer,stacked", [("GRU", False), ("LSTM", True)])
def test_a_recurrent_layer_that_is_not_unrolled_becomes_full_integer(layer, stacked):
    """TFLite's own converter kills the process on these (a segmentation fault in its
    calibrator, tensorflow issue 75140); if this test crashes, so does tfq8 again."""
    model = _rolled(layer, stacked=stacked)
    rng = np.random.default_rng(1)
    x, held = (rng.normal(size=(n, 6, 4)).astype(np.float32) for n in (48, 64))
    calib = tfq8.calibrate(model, x)
    blob = tfq8.convert(calibration=calib, method="minmax")  # no allow_float needed
    assert tfq8.inspect(blob).full_integer  # the loops' bodies included
    ops = _subgraph_ops(blob)
    assert ops[0].count("WHILE") == (2 if stacked else 1) and "DEQUANTIZE" not in ops[0]
    assert "DEQUANTIZE" not in {name for sg in ops[1:] for name in sg}
    # The same arithmetic as the quantizer's own model, whose loop carries float.
    theirs = _tflite.finish_as_converter(_tflite.quantize(_tflite.set_ranges(
        calib.model, calib.ranges("minmax"))))
    assert not tfq8.inspect(theirs).full_integer
    ours_db = tfq8.check(blob, reference=model, data=held).outputs[0].sqnr_db
    theirs_db = tfq8.check(theirs, reference=model, data=held).outputs[0].sqnr_db
    assert ours_db > 20 and ours_db == pytest.approx(theirs_db, abs=0.1)
    assert len(blob) < len(theirs)
    # The copy that kept the calibrator alive is gone: the body passes its input through.
    body = _loop_body(blob)
    assert set(body.inputs) & set(body.outputs)
    assert not any(b"tfq8_passthrough" in t.name for t in body.tensors)
    assert tfq8.convert(calibration=calib, method="minmax") == blob


def test_a_loop_whose_condition_reads_a_float_stays_float_and_says_where():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))

    def halve_until_small(t):
        return tf.while_loop(lambda i, v: tf.reduce_max(tf.abs(v)) > 1.0,
                             lambda i, v: (i + 1, v * 0.5), (tf.constant(0), t),
                             maximum_iterations=4)[1]

    h = keras.layers.Lambda(halve_until_small, output_shape=(8,))(keras.layers.Dense(8)(inp))
    model = keras.Model(inp, keras.layers.Dense(3)(h))
    x = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
    with pytest.raises(tfq8.UnsupportedOpError, match=r"WHILE.*does not fit.*unroll"):
        tfq8.convert(model, x)
    info = tfq8.inspect(tfq8.convert(model, x, allow_float=True))
    assert not info.full_integer
    assert {op.subgraph for op in info.float_ops} > {0}  # the loop's body and condition too
    assert "subgraph 2:" in str(info) and "in other subgraphs" in str(info)


def test_a_free_batch_size_is_fixed_at_one_where_the_loop_needs_it(caplog):
    """Keras 3 models have a free batch size, with which TFLite's converter cannot lower
    a recurrent layer's loop at all (its TensorList); with the batch size fixed at 1 it can."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 4)), keras.layers.LSTM(8), keras.layers.Dense(2)])
    x = np.random.default_rng(0).normal(size=(40, 5, 4)).astype(np.float32)
    with pytest.raises(tfq8.UnsupportedOpError, match="TensorList"):  # the converter alone
        _tflite.convert_float(tf.lite.TFLiteConverter.from_keras_model(model))
    with caplog.at_level("INFO", logger="tfq8"):
        blob = tfq8.convert(model, x, method="minmax")
    assert sum("batch size fixed at 1" in r.getMessage() for r in caplog.records) == 1
    assert tfq8.convert(model, x, method="minmax") == blob  # the same tensor names again
    info = tfq8.inspect(blob)
    assert info.full_integer and info.inputs[0].shape_signature == (1, 5, 4)
    assert tfq8.check(blob, reference=model, data=x).outputs[0].sqnr_db > 20
    # TFLite's own int8 conversion, for comparison, no longer crashes on the loop either;
    # its loop carries float.
    theirs = tfq8.pipeline.converter_int8(model, x)
    assert not tfq8.inspect(theirs).full_integer
    assert "WHILE" in {op.name for op in tfq8.inspect(theirs).float_ops}


def test_a_loop_model_of_several_outputs_keeps_its_signature():
    """Carrying a loop's variables in int8 drops the float tensors they leave; the signature,
    by which LiteRT and tfq8.check name the outputs, still names the right tensors."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 4))
    sequence, state = keras.layers.GRU(8, return_sequences=True, return_state=True)(inp)
    model = keras.Model(inp, [sequence, keras.layers.Dense(2)(state)])
    x = np.random.default_rng(0).normal(size=(32, 6, 4)).astype(np.float32)
    blob = tfq8.convert(model, x, method="minmax")
    parsed = _tflite.read_model(blob)
    signature, sg = parsed.signatureDefs[0], parsed.subgraphs[0]
    assert sorted(int(t.tensorIndex) for t in signature.outputs) == sorted(sg.outputs)
    report = tfq8.check(blob, reference=model, data=x)
    assert [o.shape for o in report.outputs] == [(6, 8), (2,)]
    assert min(o.sqnr_db for o in report.outputs) > 20


def test_a_time_axis_of_any_length_calibrates_and_runs_at_other_lengths():
    """keras.Input((None, 4)): the loop's input sequence has a dynamic shape, which the
    calibrator crashed on (a segmentation fault) unless it too gets a tensor of its own."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, 4))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GRU(8)(inp)))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6, 4)).astype(np.float32)
    calib = tfq8.calibrate(model, x)
    blob = tfq8.convert(calibration=calib, method="minmax")
    info = tfq8.inspect(blob)
    assert info.full_integer and info.inputs[0].shape_signature == (1, -1, 4)
    assert not any(b"tfq8_passthrough" in t.name for t in _loop_body(blob).tensors)
    theirs = _tflite.finish_as_converter(_tflite.quantize(_tflite.set_ranges(
        calib.model, calib.ranges("minmax"))))
    held = rng.normal(size=(16, 6, 4)).astype(np.float32)
    ours_db = tfq8.check(blob, reference=model, data=held).outputs[0].sqnr_db
    assert ours_db > 20 and ours_db == pytest.approx(
        tfq8.check(theirs, reference=model, data=held).outputs[0].sqnr_db, abs=0.05)
    assert tfq8.check(blob, reference=model, data=held[:, :3]).outputs[0].sqnr_db > 15


@pytest.mark.parametrize("unroll", [False, True])
def test_a_recurrent_layer_with_dropout_converts(unroll):
    """Keras 3 advances a recurrent layer's dropout seed even at inference: its TFLite graph
    keeps VAR_HANDLE and ASSIGN_VARIABLE ops, which have no inputs or no outputs."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 4)), keras.layers.LSTM(
        8, dropout=0.3, recurrent_dropout=0.3, unroll=unroll), keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(32, 6, 4)).astype(np.float32)
    blob = tfq8.convert(model, x, method="minmax")
    assert tfq8.inspect(blob).full_integer
    assert tfq8.check(blob, reference=model, data=x).outputs[0].sqnr_db > 20


@pytest.mark.parametrize("framework,as_dict", [("keras", False), ("keras", True),
                                              ("tf_keras", True)])
def test_a_model_of_two_inputs_converts_with_its_batch_size_fixed_at_one(framework, as_dict):
    """Fixed by the user (keras.Input(..., batch_size=1)) or, with a free batch size, by
    tfq8, for a list of inputs and a dict (keys not sorted) alike: the same int8 model.
    Data for it comes, as for any model, in batches of any size."""
    keras = pytest.importorskip(framework)

    def model_on(batch_size):  # (TFLite orders the inputs b, a)
        keras.utils.set_random_seed(0)
        steps = keras.Input((6, 4), name="a", batch_size=batch_size)
        extra = keras.Input((3,), name="b", batch_size=batch_size)
        h = keras.layers.Concatenate()([keras.layers.GRU(8)(steps), extra])
        return keras.Model({"b": extra, "a": steps} if as_dict else [steps, extra],
                           keras.layers.Dense(2)(h))

    rng = np.random.default_rng(0)
    x = [rng.normal(size=(32, 6, 4)).astype(np.float32),
         rng.normal(size=(32, 3)).astype(np.float32)]  # in the Keras model's order
    data = {"a": x[0], "b": x[1]} if as_dict else x
    fixed, free = model_on(1), model_on(None)
    blobs = [tfq8.convert(model, data, method="minmax") for model in (fixed, free)]
    assert tfq8.inspect(blobs[1]).full_integer
    assert [t.name for t in tfq8.inspect(blobs[1]).inputs] == [
        t.name for t in tfq8.inspect(blobs[0]).inputs]
    db = [tfq8.check(b, reference=free, data=data).outputs[0].sqnr_db for b in blobs]
    assert db[1] > 20 and db[1] == pytest.approx(db[0], abs=0.01)


class _Block(keras.layers.Layer):
    """A custom layer holding an LSTM."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rnn = keras.layers.LSTM(8)

    def call(self, x):
        return self.rnn(x)


class SubclassedGRU(keras.Model):
    def __init__(self):
        super().__init__()
        self.rnn, self.head = keras.layers.GRU(8), keras.layers.Dense(3)

    def call(self, x):
        return self.head(self.rnn(x))


@pytest.mark.parametrize("kind", ["custom_layer", "time_distributed", "subclassed"])
def test_a_loop_anywhere_in_the_model_gets_the_batch_size_fixed_at_one(kind):
    """A recurrent layer in a custom layer or a TimeDistributed, or a subclassed model,
    which has no Input to read the shape from (it is built for its first call's)."""
    keras.utils.set_random_seed(0)
    shape = (3, 6, 4) if kind == "time_distributed" else (6, 4)
    if kind == "subclassed":
        model = SubclassedGRU()
        model(np.zeros((2, *shape), np.float32))
    else:
        inner = (keras.layers.TimeDistributed(keras.layers.LSTM(8)) if kind == "time_distributed"
                 else _Block())
        model = keras.Sequential([keras.Input(shape), inner, keras.layers.Flatten(),
                                  keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(32, *shape)).astype(np.float32)
    blob = tfq8.convert(model, x, method="minmax")
    info = tfq8.inspect(blob)
    assert info.full_integer and info.inputs[0].shape_signature == (1, *shape)
    assert tfq8.check(blob, reference=model, data=x).outputs[0].sqnr_db > 20
    assert tfq8.convert(model, x, method="minmax") == blob


class TwoInputs(keras.Model):
    """A subclassed model of two inputs (a list, or a dict with `as_dict`) and a GRU."""

    def __init__(self, as_dict=False):
        super().__init__()
        self.as_dict = as_dict
        self.rnn, self.side, self.head = (keras.layers.GRU(8), keras.layers.Dense(8),
                                          keras.layers.Dense(3))

    def call(self, inputs):
        seq, feat = (inputs["seq"], inputs["feat"]) if self.as_dict else inputs
        return self.head(self.rnn(seq) + self.side(feat))


@pytest.mark.parametrize("as_dict", [False, True])
def test_a_subclassed_model_of_two_inputs_gets_the_batch_size_fixed_at_one(as_dict):
    """Its inputs are the shapes it was built for (a list, or a dict by key)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    seq = rng.normal(size=(32, 6, 4)).astype(np.float32)
    feat = rng.normal(size=(32, 5)).astype(np.float32)
    data = {"seq": seq, "feat": feat} if as_dict else [seq, feat]
    model = TwoInputs(as_dict)
    model(data)
    blob = tfq8.convert(model, data, method="minmax")
    info = tfq8.inspect(blob)
    assert info.full_integer
    assert sorted(t.shape_signature for t in info.inputs) == [(1, 5), (1, 6, 4)]
    want = np.asarray(model(data))  # Keras' own outputs: no input swapped
    got = ModelRunner(blob).run(_in_graph_order(info, [seq, feat]))[0]
    assert 10 * np.log10(np.sum(want**2) / np.sum((got - want) ** 2)) > 25


def _in_graph_order(info, arrays):
    """`arrays` (one per input, any order) in the order of the int8 model's inputs, by shape."""
    return [next(a for a in arrays if a.shape[1:] == t.shape_signature[1:]) for t in info.inputs]


def test_a_tf_keras_lstm_runs_every_sample_from_its_first_state():
    """A tf_keras LSTM becomes TFLite's fused LSTM, whose state lives in variable tensors that
    each run leaves holding its last state; with the batch size fixed at 1, each sample
    started from the one before (10.6 dB against Keras' outputs, and check did not see it)."""
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.Input((6, 4)), tf_keras.layers.LSTM(8),
                                 tf_keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(32, 6, 4)).astype(np.float32)
    blob = tfq8.convert(model, x, method="minmax")
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in _subgraph_ops(blob)[0]
    want = model.predict(x, verbose=0)
    error = ModelRunner(blob).run([x])[0] - want
    sqnr_db = 10 * np.log10(np.sum(want ** 2) / np.sum(error ** 2))
    assert sqnr_db > 20
    assert tfq8.check(blob, reference=model, data=x).outputs[0].sqnr_db == pytest.approx(
        sqnr_db, abs=0.5)


def test_the_states_a_loop_returns_are_the_ones_its_body_wrote():
    """An LSTM reads its state at a step on one grid (the range of the states it starts steps
    from) and writes it on another (the states it ends them with). Carried on the grid it
    reads, the state returned (return_state=True) was requantized once more than in the
    quantizer's float-carrying loop: 1.1 dB less on the cell state. It starts at zeros, exact
    on any grid, so it is carried on the grid the body writes."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 4))
    sequence, h, c = keras.layers.LSTM(8, return_state=True)(inp)
    model = keras.Model(inp, [keras.layers.Dense(3)(sequence), h, c])
    rng = np.random.default_rng(1)
    x, held = (rng.normal(size=(n, 6, 4)).astype(np.float32) for n in (64, 64))
    calib = tfq8.calibrate(model, x)
    blob = tfq8.convert(calibration=calib, method="minmax")
    assert tfq8.inspect(blob).full_integer
    theirs = _tflite.finish_as_converter(_tflite.quantize(_tflite.set_ranges(
        calib.model, calib.ranges("minmax"))))
    ours_db, theirs_db = ([o.sqnr_db for o in tfq8.check(b, reference=model, data=held).outputs]
                          for b in (blob, theirs))
    assert ours_db == pytest.approx(theirs_db, abs=0.05)


def test_a_stateful_recurrent_layer_is_refused_saying_why():
    """stateful=True keeps the state in a variable between runs, which stays float."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 4), batch_size=1),
                              keras.layers.GRU(8, stateful=True), keras.layers.Dense(2)])
    x = np.random.default_rng(0).normal(size=(16, 6, 4)).astype(np.float32)
    with pytest.raises(tfq8.UnsupportedOpError, match=r"READ_VARIABLE.*stateful=False"):
        tfq8.convert(model, x, method="minmax")


def _accumulating_lstm(seed: int = 0, steps: int = 24):
    """An LSTM whose forget gate stays open, so its cell state grows step by step: its
    last steps set one range for all of them."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((steps, 4)), keras.layers.LSTM(8),
                              keras.layers.Dense(3)])
    kernel, recurrent, bias = model.layers[0].get_weights()
    bias[8:16], bias[16:24] = 3.0, 0.0  # forget and cell gates (Keras orders i, f, c, o)
    model.layers[0].set_weights([kernel, recurrent, bias])
    return model


@pytest.mark.parametrize("layer,found", [("LSTM", ["lstm_cell_1/add"]), ("GRU", ["gru_cell_1/add_4"]),
                                         ("SimpleRNN", [])])
def test_loop_states_are_the_variables_a_body_accumulates(layer, found):
    """An LSTM's cell state (c * f + i * g) and a GRU's state (z * h + (1 - z) * hh) are
    accumulators; the LSTM's output state and a SimpleRNN's pass through a tanh."""
    x = np.random.default_rng(0).normal(size=(16, 6, 4)).astype(np.float32)
    calib = tfq8.calibrate(_rolled(layer), x)
    states = loop_states(calib.model)
    assert [s.name.rsplit("/", 2)[-2] + "/" + s.name.rsplit("/", 1)[-1] for s in states] == found
    for state in states:  # the value a step reads, what it is multiplied into, what it returns
        assert len(state.tensors) == 3
    if states:
        body = _tflite.read_model(calib.model).subgraphs[states[0].body]
        narrowed = _tflite.read_model(scale_loop_states(calib.model, {states[0]: 0.5}))
        for t in states[0].tensors:
            before, after = body.tensors[t].quantization, narrowed.subgraphs[
                states[0].body].tensors[t].quantization
            np.testing.assert_allclose([after.min[0], after.max[0]],
                                       [before.min[0] / 2, before.max[0] / 2], rtol=1e-6)


def test_a_masked_lstm_state_is_found_through_the_select_that_keeps_it():
    """A masked step keeps the state it was given: SELECT_V2(mask, new, given)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 4))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.LSTM(8)(
        keras.layers.Masking()(inp))))
    x = np.random.default_rng(0).normal(size=(16, 6, 4)).astype(np.float32)
    x[:, 4:] = 0.0
    calib = tfq8.calibrate(model, x)
    (state,) = loop_states(calib.model)
    parsed = _tflite.read_model(calib.model)
    body = parsed.subgraphs[state.body]
    assert state.name.rsplit("/", 1)[-1].startswith("SelectV2")
    producers = sorted(_tflite.op_name(parsed, op) for op in body.operators
                       if set(int(o) for o in op.outputs) & set(state.tensors))
    assert producers == ["ADD", "MUL", "SELECT_V2"]


def test_auto_narrows_a_growing_cell_state_and_gains_on_held_out_data(monkeypatch):
    """One int8 grid serves every step of the loop; the range of the cell state's last,
    largest steps leaves its first steps few codes. auto narrows it where the output is
    clearly closer to float, here by 2 dB on data it did not calibrate on."""
    model = _accumulating_lstm()
    rng = np.random.default_rng(0)
    x, held = (rng.normal(size=(n, 24, 4)).astype(np.float32) for n in (128, 200))
    calib = tfq8.calibrate(model, x)
    narrowed = tfq8.convert(calibration=calib, method="auto")
    scales = calib.last_auto.loop_scales
    assert list(scales) == [s.name for s in loop_states(calib.model)]
    assert 0 < list(scales.values())[0] < 1
    assert "1 loop state(s) narrowed" in calib.last_auto.summary()
    assert tfq8.inspect(narrowed).full_integer
    assert tfq8.convert(calibration=calib, method="auto") == narrowed  # the same bytes again
    monkeypatch.setattr(auto, "loop_states", lambda model: [])
    plain = tfq8.convert(calibration=calib, method="auto")
    assert calib.last_auto.loop_scales == {}
    gain = (tfq8.check(narrowed, reference=model, data=held).outputs[0].sqnr_db
            - tfq8.check(plain, reference=model, data=held).outputs[0].sqnr_db)
    assert gain > 1.5
