"""Mixed-precision Keras models: the float32 copy tfq8 converts.

A model trained under a `mixed_float16` or `mixed_bfloat16` dtype policy
computes in half precision, which TFLite's int8 conversion does not take (its
converter fails on float16 MATMULs and convolutions). Its variables are float32
all the same, so the float32 model is one config away: `float32_model` clones
a Sequential or functional model (Keras 3 or tf_keras, nested models and the
layers inside wrappers too) with every half-precision policy set to `float32`
(and the float16 inputs a nested model built under the policy takes made
float32), and gives the copy the model's current weights. Layer and model
names are kept, so the copy converts to the same bytes as a float32 model
built by hand with those weights.

A subclassed model (and a functional subclass that overrides `call`, which a
clone would turn into a plain functional model) is made again from its config
instead (`get_config` / `from_config`, then built at the shapes it was built
for), so that the layers its `__init__` creates take the float32 policy, and
its layers are given the model's layer names (Keras 3), so that the `.tflite`'s
tensor names are those of a conversion of the model itself. One whose
config does not rebuild it, or whose `__init__` sets a half-precision policy
itself, is refused, with what to do.

The copy is made once per model object and its weights refreshed on every call,
so a `CalibrationCallback` converting during a mixed-precision `fit` quantizes
the weights of that epoch; it is made again when the model's layers change
(`Sequential.add` or `pop`).

Example:
    >>> keras.mixed_precision.set_global_policy("mixed_float16")
    >>> model = build_and_train()                    # computes in float16
    >>> blob = tfq8.convert(model, x_train[:500])    # quantizes its float32 copy
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from typing import Any, Iterator

import numpy as np

from tfq8 import _tflite
from tfq8.errors import UnsupportedOpError

_log = logging.getLogger("tfq8")

HALF = ("float16", "bfloat16")
# model -> (its float32 copy, weak references to the layers it was made from).
_COPIES: "weakref.WeakKeyDictionary[Any, tuple[Any, list[Any]]]" = weakref.WeakKeyDictionary()


def half_layers(model: Any) -> list[Any]:
    """The layers of `model` (through nested models) that compute in float16 or bfloat16."""
    # Through wrappers (Bidirectional, TimeDistributed) and custom layers too: the layer
    # a wrapper holds keeps its own policy, which `model.layers` does not list.
    return _half_of(_tflite.keras_layers(model))


def _half_of(layers: list[Any]) -> list[Any]:
    return [layer for layer in layers
            if getattr(getattr(layer, "dtype_policy", None), "compute_dtype", None) in HALF
            and type(layer).__name__ != "InputLayer"]  # computes nothing


def float32_model(model: Any) -> Any:
    """`model` itself, or its float32 copy with its current weights if it computes in half precision.

    Args:
        model: A built Keras 3 or tf_keras model.

    Returns:
        `model` when no layer computes in float16 or bfloat16; otherwise a
        clone whose layers all compute in float32, holding `model`'s weights
        as they are now.

    Raises:
        UnsupportedOpError: If the model computes in half precision and no
            float32 copy can be made (a config that does not rebuild the model
            or a layer, an `__init__` that sets a half-precision policy
            itself), naming the layers and what to do.

    Example:
        >>> float32_model(mixed_model).layers[1].dtype_policy.name
        'float32'
    """
    layers = _tflite.keras_layers(model)
    half = _half_of(layers)
    if not half:
        return model
    copy, made_from = _COPIES.get(model, (None, []))
    if copy is None or len(made_from) != len(layers) or any(
            ref() is not layer for ref, layer in zip(made_from, layers)):
        # First call, or the layers changed since (Sequential.add/pop): a new copy.
        copy, reason = _clone_in_float32(model)
        if copy is None:
            raise _refusal(model, half, reason)
        _COPIES[model] = copy, [weakref.ref(layer) for layer in layers]
        _log.info("The model computes in %s (dtype policy %r); tfq8 converts a copy that "
                  "computes in float32, with the same weights, as TFLite's int8 conversion "
                  "needs.", half[0].dtype_policy.compute_dtype, half[0].dtype_policy.name)
    else:  # the weights of now (a later epoch)
        _copy_weights(model, copy)
    return copy


def _copy_weights(model: Any, copy: Any) -> None:
    """`model`'s weights into `copy`. An adapted `Normalization` layer computes with
    tensors it derives from its weights in `finalize_state()` (Keras calls it after
    `adapt` and after loading a file, not in `set_weights`): a clone's would stay at
    the mean 0 and variance 1 it was built with."""
    from tfq8.models import keras_module  # noqa: PLC0415 (cycle)

    copy.set_weights(model.get_weights())
    normalization = keras_module(copy).layers.Normalization
    for layer in _tflite.keras_layers(copy):
        if isinstance(layer, normalization):
            layer.finalize_state()


def _clone_in_float32(model: Any) -> tuple[Any, str]:
    """(the float32 clone, "") or (None, why it could not be made)."""
    import tensorflow as tf  # noqa: PLC0415

    from tfq8.models import keras_module  # noqa: PLC0415 (cycle)

    framework = keras_module(model)

    def as_float32(layer: Any) -> Any:
        if isinstance(layer, framework.Model):  # a nested model, cloned the same way
            return clone(layer, nested=True)
        if isinstance(layer, framework.layers.Lambda):  # its live function
            return _tflite.lambda_in_float32(layer)
        return layer.__class__.from_config(_float32_config(layer.get_config()))

    def clone(m: Any, nested: bool = False) -> Any:
        # Keras re-creates a model's inputs with their own dtypes: a nested Sequential
        # built under the policy takes float16 whatever it is called on, which would
        # cast the float32 graph back. So a nested model takes the tensors it is called
        # on, and any model takes float32 where it took half precision.
        try:
            struct = m.input
        except (AttributeError, ValueError):  # a Sequential model built by build(), never called
            struct = list(getattr(m, "inputs", None) or [])
        inputs = None
        if nested or any(_is_half(t.dtype) for t in tf.nest.flatten(struct)):
            inputs = tf.nest.map_structure(
                lambda t: framework.Input(batch_shape=tuple(t.shape), name=t.name.split(":")[0],
                                          dtype="float32" if _is_half(t.dtype) else t.dtype),
                struct)
        copy = framework.models.clone_model(m, input_tensors=inputs, clone_function=as_float32)
        if type(copy).call is not type(m).call:
            # A functional subclass that overrides call and whose __init__ does not take
            # (inputs, outputs): clone_model makes a plain functional model of its graph,
            # without the override. Made again from its config, as a subclassed model.
            return rebuild(m)
        return copy

    def rebuild(m: Any) -> Any:
        # A subclassed model: made again from its config, so that the layers its
        # __init__ creates take the float32 policy, and called on zeros of the
        # shapes it was built for (build_from_config leaves a Model unbuilt).
        copy = type(m).from_config(_float32_config(m.get_config()))
        if not copy.built:  # (a functional subclass builds its graph in __init__)
            copy(_zeros(m.get_build_config()["input_shape"]), training=False)
        _tflite.rename_like(copy, m)
        return copy

    try:
        with _float32_policy(framework):
            copy = clone(model) if _tflite.is_graph_model(model) else rebuild(model)
            _copy_weights(model, copy)
    except Exception as e:  # noqa: BLE001 - Keras raises many kinds for models it cannot clone
        first = str(e).splitlines()[0] if str(e) else ""
        return None, f"{type(e).__name__}: {first}"
    left = half_layers(copy)
    if left:
        return None, f"layer {left[0].name!r} still computes in {left[0].dtype_policy.compute_dtype}"
    return copy, ""


def _zeros(shape: Any) -> Any:
    """float32 zeros of a Keras build config's input shape (a shape, or a list or dict
    of them), batch size 1 where it is free."""
    if isinstance(shape, dict):
        return {k: _zeros(v) for k, v in shape.items()}
    if isinstance(shape, (list, tuple)) and shape and all(
            isinstance(d, (list, tuple, dict)) for d in shape):
        return [_zeros(s) for s in shape]
    return np.zeros([1 if d is None else int(d) for d in shape], np.float32)


def _float32_config(config: Any) -> Any:
    """A layer config with every half-precision `dtype` in it made float32, at any depth:
    a wrapper's (`Bidirectional`, `TimeDistributed`) or a custom layer's config holds the
    config of the layer inside, with that layer's own policy."""
    if isinstance(config, dict):
        new = {k: "float32" if k == "dtype" and _is_half(v) else _float32_config(v)
               for k, v in config.items()}
        changed = any(new[k] is not v for k, v in config.items())
    elif isinstance(config, (list, tuple)):  # a tf_keras ListWrapper (BatchNormalization's axis)
        new = [_float32_config(v) for v in config]  # is left as it is unless a dtype changes
        changed = any(a is not b for a, b in zip(new, config))
        new = tuple(new) if isinstance(config, tuple) else new
    else:
        return config
    return new if changed else config


def _is_half(dtype: Any) -> bool:
    """Whether a dtype, a dtype name or a layer config's serialized policy is half precision."""
    if isinstance(dtype, dict):
        dtype = (dtype.get("config") or {}).get("name")
    name = getattr(dtype, "name", dtype)
    return isinstance(name, str) and name.replace("mixed_", "") in HALF


@contextlib.contextmanager
def _float32_policy(framework: Any) -> Iterator[None]:
    """The global dtype policy of `framework` (`keras` or `tf_keras`) at float32 for the
    block, so that sublayers a layer creates without passing its own policy (a custom
    layer's) compute in float32 too."""
    if framework.__name__ == "tf_keras":
        get, put = framework.mixed_precision.global_policy, framework.mixed_precision.set_global_policy
    else:
        get, put = framework.config.dtype_policy, framework.config.set_dtype_policy
    before = get()
    put("float32")
    try:
        yield
    finally:
        put(before)


def _refusal(model: Any, half: list[Any], reason: str) -> UnsupportedOpError:
    from tfq8.models import is_tf_keras_model  # noqa: PLC0415 (cycle)

    policy = half[0].dtype_policy
    setter = ("tf_keras.mixed_precision.set_global_policy('float32')" if is_tf_keras_model(model)
              else "keras.config.set_dtype_policy('float32')")
    names = ", ".join(repr(layer.name) for layer in half[:3]) + (", ..." if len(half) > 3 else "")
    return UnsupportedOpError(
        f"The model computes in {policy.compute_dtype} (layers {names} use the dtype policy "
        f"{policy.name!r}), which TFLite's int8 conversion does not take, and tfq8 could not "
        f"make a float32 copy of it ({reason}). "
        f"{_tflite.FLOAT32_REBUILD_HINT.format(setter=setter)} "
        f"Received: model with dtype policy {policy.name!r}")
