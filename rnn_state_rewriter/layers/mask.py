"""`SequenceMask`: the Keras mask a tensor carries at run time, as a tensor (Keras 3 only)."""

from __future__ import annotations

from typing import Any

import keras

from rnn_state_rewriter.layers.base import PACKAGE

__all__ = ["SequenceMask"]


@keras.saving.register_keras_serializable(package=PACKAGE)
class SequenceMask(keras.layers.Layer):
    """Outputs the Keras mask its input carries at run time (all True if none).

    Keras 3 only. Keras 3 gives a layer its input's mask only when the layer
    gets a single tensor argument, so a recurrent layer called with
    `initial_state=` loses a mask that is not in the graph but arrives at run
    time (Keras 3 hands masks on at run time into and past nested submodels).
    In models that use masks, `add_trainable_initial_states` inserts this layer
    there and passes its output as `mask=`, so padded steps are still skipped.

    Example:

    ```python
    >>> import keras, numpy as np
    >>> x = keras.layers.Embedding(5, 2, mask_zero=True)(np.array([[1, 0]]))
    >>> keras.ops.convert_to_numpy(SequenceMask()(x)).tolist()
    [[True, False]]

    ```
    """

    __module__ = "rnn_state_rewriter.layers"  # saved configs name it

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs: Any, mask: Any = None) -> Any:
        if mask is None:
            return keras.ops.ones(keras.ops.shape(inputs)[:2], dtype="bool")
        return keras.ops.convert_to_tensor(mask)

    def compute_output_spec(self, inputs: Any, mask: Any = None) -> Any:
        return keras.KerasTensor(tuple(inputs.shape[:2]), dtype="bool")

    def compute_mask(self, inputs: Any, mask: Any = None) -> None:
        return None
