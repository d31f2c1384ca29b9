"""One training process for tests/test_distributed.py: retrofit, fit, print the learned states as JSON.

Usage: python distributed_worker.py GENERATION MODE
MODE is `single` (one device), `mirrored` (MirroredStrategy over two logical
CPU devices) or `multiworker` (MultiWorkerMirroredStrategy; TF_CONFIG set by
the caller). Same data and seeds in every mode. With RSR_PLAIN=1 the model is
trained without the retrofit (to show where Keras itself fails).
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf


def main(generation: str, mode: str) -> None:
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
    new.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    states = (
        {}
        if os.environ.get("RSR_PLAIN")
        else {name: [v.tolist() for v in values] for name, values in rsr.initial_states(new).items()}
    )
    print("STATES " + json.dumps({"replicas": strategy.num_replicas_in_sync, "states": states, "pid": os.getpid()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
