"""Keras 2 model files on Keras 3: on any backend, without TensorFlow.

Most pretrained recurrent models are Keras 2 (or tf.keras 2.x) `.h5` files,
which Keras 3 does not load: their recurrent layers carry `time_major`,
configs of Keras < 2.2.3 list a Sequential model's layers without a name,
`CuDNNLSTM`/`CuDNNGRU` weights have another layout, and Keras 3's
`hard_sigmoid` computes otherwise than Keras 2's. This module reads them into
Keras 3 with the predictions tf-keras gives:

- `read_keras2_model(path)`: a full model `.h5` file.
- `keras2_model_from_json(text)` then `load_keras2_weights(model, path)`: a
  Keras 2 JSON config and its weights (`save_weights` `.h5`, or a full file).

What is translated: list-form Sequential configs, the numbering of a nested
model's calls (Keras 2 counted the node a model built on its own inputs made
of itself), `CuDNNLSTM` (an `LSTM` with
`tanh` and `sigmoid`, its two bias vectors summed) and `CuDNNGRU` (a
`GRU(reset_after=True)`, its kernels reordered as tf-keras reorders them), the
layer arguments Keras 3 dropped (`time_major`, `Embedding`'s `input_length`),
defaults that changed (a `GRU` of Keras < 2.1.3 has no `reset_after`: it
computed as `reset_after=False`, where Keras 3 and tf-keras default to True),
and Keras 2's `hard_sigmoid`, kept as the registered
`rnn_state_rewriter>hard_sigmoid_keras2` so that a `.keras` file of the model
keeps it. Everything else (the layers around recurrent ones: `Embedding`,
`Dense`, `TimeDistributed`, `Bidirectional`, `Conv1D`, `BatchNormalization`,
`Masking`, `Dropout`...) goes through Keras 3's own reader of Keras 2 configs.
Refused, in one `ValueError` that says why: Keras 1 files, files of the
Theano backend, and files without a model config (weights only: build the
model, then `load_keras2_weights`). The model comes back uncompiled.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = ["keras2_model_from_json", "load_keras2_weights", "read_keras2_model", "translate_config"]

_RNN_ARGUMENTS_DROPPED = ("time_major",)
_CUDNN = {"CuDNNLSTM": "LSTM", "CuDNNGRU": "GRU"}
# Keras 2's hard_sigmoid, as Keras 3 reads a function: by name from the custom objects the reader
# passes in a legacy config, as Keras 3 serializes a registered function in a config of the newer
# format (tf.keras >= 2.13 writes one, its objects carrying a "module").
HARD_SIGMOID_LEGACY = "hard_sigmoid_keras2"
HARD_SIGMOID = {
    "module": "builtins",
    "class_name": "function",
    "config": "rnn_state_rewriter>hard_sigmoid_keras2",
    "registered_name": "function",
}


# ----------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------


def _is_hard_sigmoid(value: Any) -> bool:
    if isinstance(value, dict):
        value = value.get("config") if value.get("class_name") in ("function", None) else None
    return value == "hard_sigmoid"


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every serialized object (`{"class_name": ..., "config": ...}`) in a config, outermost first."""
    if isinstance(node, dict):
        if "class_name" in node and "config" in node:
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def _translate_object(obj: dict[str, Any]) -> None:
    """Rewrites one serialized Keras 2 object in place into what Keras 3 reads the same way."""
    name, config = obj["class_name"], obj["config"]
    if name == "Sequential" and isinstance(config, list):  # Keras < 2.2.3: the layers alone
        obj["config"] = config = {"name": "sequential", "layers": config}
    if name == "Sequential":
        _input_layer_first(config.get("layers", []))
    if name in ("Functional", "Model") and isinstance(config, dict):
        _renumber_nested_model_nodes(config)
    if name in _CUDNN:
        obj["class_name"] = _CUDNN[name]
        config.update(activation="tanh", recurrent_activation="sigmoid", use_bias=True)
        if name == "CuDNNGRU":
            config["reset_after"] = True
    if not isinstance(config, dict):
        return
    for key in ("layer", "backward_layer"):  # a wrapper's layer: Keras 3 reads it in the newer format
        inner = config.get(key)
        if isinstance(inner, dict) and "class_name" in inner and "module" not in inner:
            inner.update(module="keras.layers", registered_name=None)
    if obj["class_name"] in ("LSTM", "GRU", "SimpleRNN", "RNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"):
        for argument in _RNN_ARGUMENTS_DROPPED:
            config.pop(argument, None)
    if obj["class_name"] == "Embedding":
        config.pop("input_length", None)
    if obj["class_name"] == "GRU":  # Keras < 2.1.3 had no reset_after: it computed as reset_after=False
        config.setdefault("reset_after", False)
    for key, value in list(config.items()):
        if key.endswith("activation") and _is_hard_sigmoid(value):
            config[key] = dict(HARD_SIGMOID) if "module" in obj else HARD_SIGMOID_LEGACY


def _input_layer_first(layers: list[dict[str, Any]]) -> None:
    """A Sequential model whose first layer carries its input shape gets an `InputLayer` with it.

    (Keras 3 reads a `batch_input_shape` on another layer of a legacy config
    as a shape without the batch axis.)
    """
    if not layers or layers[0].get("class_name") == "InputLayer" or not isinstance(layers[0].get("config"), dict):
        return
    first = layers[0]["config"]
    shape = first.pop("batch_input_shape", None)
    if shape is None:
        return
    config = {"batch_input_shape": shape, "dtype": first.get("dtype", "float32"), "name": f"{first['name']}_input"}
    layer: dict[str, Any] = {"class_name": "InputLayer", "config": config}
    if "module" in layers[0]:
        layer.update(module="keras.layers", registered_name=None)
    layers.insert(0, layer)


_MODELS = ("Sequential", "Functional", "Model")


def _has_own_input(layer: dict[str, Any]) -> bool:
    """Whether a nested model of a Keras 2 config was built on inputs of its own (which made it a node)."""
    config = layer.get("config")
    if layer.get("class_name") != "Sequential":
        return True
    layers = config if isinstance(config, list) else (config or {}).get("layers", [])
    return bool(layers) and (
        layers[0].get("class_name") == "InputLayer" or "batch_input_shape" in layers[0].get("config", {})
    )


def _renumber_nested_model_nodes(config: dict[str, Any]) -> None:
    """References to a nested model's calls, numbered as Keras 3 numbers them.

    Keras 2 counts the node a model built on its own inputs makes of itself,
    so its first call is node 1; Keras 3 makes none, so its first call is node 0.
    """
    nested = {
        layer.get("config", {}).get("name", layer.get("name"))
        for layer in config.get("layers", [])
        if layer.get("class_name") in _MODELS and _has_own_input(layer)
    }
    if not nested:
        return

    def renumber(reference: Any) -> None:
        if isinstance(reference, list) and len(reference) >= 3 and isinstance(reference[0], str):
            if reference[0] not in nested:
                return
            if isinstance(reference[1], int) and reference[1] > 0:
                reference[1] -= 1
        elif isinstance(reference, list):
            for item in reference:
                renumber(item)

    for layer in config.get("layers", []):
        renumber(layer.get("inbound_nodes", []))
    renumber(config.get("input_layers", []))
    renumber(config.get("output_layers", []))


def translate_config(config: dict[str, Any]) -> dict[str, Any]:
    """A Keras 2 model config (`model.get_config()` with its class name) as Keras 3 reads it; a new dict.

    Example:

    ```python
    >>> from rnn_state_rewriter.keras2 import translate_config
    >>> old = {"class_name": "Sequential", "config": [
    ...     {"class_name": "LSTM", "config": {"name": "lstm", "units": 2, "time_major": False,
    ...      "recurrent_activation": "hard_sigmoid", "batch_input_shape": [None, 5, 3]}}]}
    >>> new = translate_config(old)
    >>> new["config"]["name"], [layer["class_name"] for layer in new["config"]["layers"]]
    ('sequential', ['InputLayer', 'LSTM'])
    >>> sorted(new["config"]["layers"][1]["config"])
    ['name', 'recurrent_activation', 'units']
    >>> new["config"]["layers"][1]["config"]["recurrent_activation"]
    'hard_sigmoid_keras2'

    ```
    """
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(
            "A Keras 2 model config is a dict with `class_name` and `config` (the JSON of `model.to_json()`). "
            f"Received: {type(config).__name__}"
        )
    translated = copy.deepcopy(config)
    for obj in list(_objects(translated)):
        _translate_object(obj)
    return translated


# ----------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _names(values: Any) -> list[str]:
    return [_text(v) for v in values]


def _check_origin(handle: Any, path: str) -> None:
    version = _text(handle.attrs.get("keras_version", "2"))
    backend = _text(handle.attrs.get("backend", "tensorflow"))
    if version.startswith("1"):
        raise ValueError(
            f"{path} was written by Keras {version}: Keras 1 files are not read. Load it with Keras 2.x and "
            "save it again."
        )
    if backend == "theano":
        raise ValueError(
            f"{path} was written with the Theano backend, whose convolution kernels are flipped: not read. "
            "Load it with Keras 2.x on Theano and save it with TensorFlow."
        )


def _model_config(handle: Any, path: str) -> dict[str, Any]:
    text = handle.attrs.get("model_config")
    if text is None:
        raise ValueError(
            f"{path} holds weights only (no model config). Build the model in Keras 3, then call "
            "`load_keras2_weights(model, path)`."
        )
    config = json.loads(_text(text))
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"{path}: its model config is not a Keras model config")
    return config


def read_keras2_model(path: str, *, custom_objects: dict[str, Any] | None = None, safe_mode: bool = True) -> Any:
    """Reads a Keras 2 (or tf.keras 2.x) `.h5` model file into an uncompiled Keras 3 model.

    Args:
        path: a full model `.h5` file written by Keras 2.x or tf-keras.
        custom_objects: the model's custom classes and functions, by name.
        safe_mode: refuse to run the Python code a `Lambda` layer carries.

    Returns:
        A Keras 3 model (Functional or Sequential) that predicts what tf-keras
        predicts with the file.

    Raises:
        ValueError: for a file that is not a Keras 2 model file, one of Keras
            1 or the Theano backend, one with weights only, or weights that do
            not fit the model the config describes.
    """
    import h5py

    with h5py.File(path, "r") as handle:
        _check_origin(handle, path)
        config = _model_config(handle, path)
        model = _model_from_config(config, custom_objects, safe_mode)
        _load_weights(model, handle["model_weights"] if "model_weights" in handle else handle)
    return model


def keras2_model_from_json(text: str, *, custom_objects: dict[str, Any] | None = None, safe_mode: bool = True) -> Any:
    """Builds the Keras 3 model a Keras 2 JSON config (`model.to_json()`) describes, with fresh weights.

    Load its weights with `load_keras2_weights`.

    Raises:
        ValueError: if `text` is not the JSON of a Keras model config.
    """
    try:
        config = json.loads(text)
    except ValueError as error:
        raise ValueError(f"Argument `text` must be the JSON of a Keras 2 model config: {error}") from None
    return _model_from_config(config, custom_objects, safe_mode)


def load_keras2_weights(model: Any, path: str) -> None:
    """Loads the weights of a Keras 2 `.h5` file (weights only, or a full model file) into a Keras 3 model.

    Layers are matched by name; `CuDNNLSTM`/`CuDNNGRU` weights are converted
    for an `LSTM` or a `GRU(reset_after=True)` as tf-keras converts them
    (recognized by their shapes).

    Raises:
        ValueError: if a layer of the file is not in the model, or its weights
            do not fit the layer's.
    """
    import h5py

    with h5py.File(path, "r") as handle:
        _check_origin(handle, path)
        _load_weights(model, handle["model_weights"] if "model_weights" in handle else handle)


def _model_from_config(config: dict[str, Any], custom_objects: dict[str, Any] | None, safe_mode: bool) -> Any:
    from rnn_state_rewriter.activations import hard_sigmoid_keras2
    from rnn_state_rewriter.backend import keras3

    objects = {HARD_SIGMOID_LEGACY: hard_sigmoid_keras2, **(custom_objects or {})}
    return keras3.model_from_legacy_config(translate_config(config), objects, safe_mode)


# ----------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------


def _split_gates(kernel: np.ndarray, gates: int, each: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return np.hstack([each(k) for k in np.hsplit(kernel, gates)])


def _from_cudnn(kind: str, values: list[np.ndarray]) -> list[np.ndarray]:
    """CuDNN-layout weights (kernel, recurrent kernel, two biases) as Keras' `LSTM`/`GRU` holds them."""
    gates = 4 if kind == "LSTM" else 3
    kernel = _split_gates(values[0], gates, lambda k: k.T.reshape(k.shape, order="F"))
    recurrent = _split_gates(values[1], gates, lambda k: k.T)
    bias = np.sum(np.split(values[2], 2), axis=0) if kind == "LSTM" else values[2].reshape(2, -1)
    return [kernel, recurrent, bias]


def _convert(layer: Any, values: list[np.ndarray]) -> list[np.ndarray]:
    """The file's values of one layer in the layout the Keras 3 layer holds them."""
    kind = type(layer).__name__
    if kind == "Bidirectional":
        half = len(values) // 2
        return _convert(layer.forward_layer, values[:half]) + _convert(layer.backward_layer, values[half:])
    if kind not in ("LSTM", "GRU") or len(values) != 3:
        return values
    units, gates = values[1].shape[0], 4 if kind == "LSTM" else 3
    if values[2].shape == (2 * units * gates,):  # two bias vectors of 4 (3) gates each: cuDNN's layout
        if kind == "GRU" and not layer.reset_after:
            raise ValueError(
                f"Layer '{layer.name}' is a GRU with reset_after=False; the file holds CuDNNGRU weights, "
                "which only a GRU with reset_after=True computes with."
            )
        return _from_cudnn(kind, values)
    return values


def _load_weights(model: Any, group: Any) -> None:
    layers = {layer.name: layer for layer in model.layers}
    for name in _names(group.attrs.get("layer_names", [])):
        weight_names = _names(group[name].attrs.get("weight_names", []))
        if not weight_names:
            continue
        layer = layers.get(name)
        if layer is None:
            raise ValueError(
                f"The file holds weights of a layer '{name}', which model '{model.name}' does not have "
                f"(its layers: {sorted(layers)})."
            )
        values = _convert(layer, [np.asarray(group[name][w]) for w in weight_names])
        targets = [*layer.trainable_weights, *layer.non_trainable_weights]
        shapes = [tuple(v.shape) for v in values]
        expected = [tuple(t.shape) for t in targets]
        if shapes != expected:
            raise ValueError(
                f"The file's weights of layer '{name}' have shapes {shapes}; the Keras 3 layer "
                f"({type(layer).__name__}) holds {expected}."
            )
        for target, value in zip(targets, values, strict=True):
            target.assign(value.astype(target.dtype))
