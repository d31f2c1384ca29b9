"""One training process for tests/test_distributed.py: retrofit, fit, print the learned states as JSON.

Usage: python distributed_worker.py GENERATION MODE
MODE is `single` (one device), `mirrored` (MirroredStrategy over two logical
CPU devices), `multiworker` (MultiWorkerMirroredStrategy; TF_CONFIG set by
the caller), or, for Keras 3 on JAX (KERAS_BACKEND=jax, and XLA_FLAGS giving
two host devices), `jax_single` and `jax_data_parallel`
(`keras.distribution.DataParallel`). Same data and seeds in every mode. With
RSR_PLAIN=1 the model is trained without the retrofit (to show where Keras
itself fails).
"""

import json
import os
import sys

import numpy as np


def main(generation: str, mode: str) -> None:
    if mode.startswith("jax_"):
        return main_jax(mode)
    import tensorflow as tf

    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    if generation == "keras3":
        import keras as K
    else:
        import tf_keras as K
    import rnn_state_rewriter as rsr

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6, 3)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")

    if mode == "mirrored":
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    elif mode == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()

    with strategy.scope():
        K.utils.set_random_seed(0)
        inputs = K.Input((6, 3))
        model = K.Model(inputs, K.layers.Dense(1, name="head")(K.layers.LSTM(4, name="lstm")(inputs)))
        new = model if os.environ.get("RSR_PLAIN") else rsr.add_trainable_initial_states(model)
        new.compile(K.optimizers.SGD(0.5), "mse")
    report(new, x, y, strategy.num_replicas_in_sync)


def main_jax(mode: str) -> None:
    import keras

    import rnn_state_rewriter as rsr

    devices = keras.distribution.list_devices("cpu")
    if mode == "jax_data_parallel":
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6, 3)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 3))
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(keras.layers.LSTM(4, name="lstm")(inputs)))
    new = rsr.add_trainable_initial_states(model)
    new.compile(keras.optimizers.SGD(0.5), "mse")
    report(new, x, y, len(devices) if mode == "jax_data_parallel" else 1)


def report(new, x, y, replicas: int) -> None:
    """Fits, then prints the learned states as one JSON line."""
    import rnn_state_rewriter as rsr

    new.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    states = (
        {}
        if os.environ.get("RSR_PLAIN")
        else {name: [v.tolist() for v in values] for name, values in rsr.initial_states(new).items()}
    )
    print("STATES " + json.dumps({"replicas": replicas, "states": states, "pid": os.getpid()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
