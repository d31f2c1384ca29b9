"""Keras 2's activations where Keras 3 computes otherwise, registered for Keras 3.

Keras 3's `hard_sigmoid` is `relu6(x + 3) / 6` (slope 1/6); Keras 2's was
`clip(0.2 x + 0.5, 0, 1)` (slope 0.2). A Keras 2 model read into Keras 3
(`rnn_state_rewriter.keras2`) keeps its own formula through
`hard_sigmoid_keras2`, which Keras 3 saves by its registered name
(`rnn_state_rewriter>hard_sigmoid_keras2`), so a `.keras` file of the model
keeps it too.
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["hard_sigmoid_keras2"]


@keras.saving.register_keras_serializable(package="rnn_state_rewriter", name="hard_sigmoid_keras2")
def hard_sigmoid_keras2(x: Any) -> Any:
    """Keras 2's hard sigmoid: `clip(0.2 * x + 0.5, 0, 1)`.

    Example:

    ```python
    >>> import numpy as np
    >>> from rnn_state_rewriter.activations import hard_sigmoid_keras2
    >>> y = hard_sigmoid_keras2(np.array([-3.0, -1.0, 0.0, 1.0, 3.0]))
    >>> np.asarray(y, dtype='float64').round(2).tolist()
    [0.0, 0.3, 0.5, 0.7, 1.0]

    ```
    """
    x = keras.ops.convert_to_tensor(x)
    return keras.ops.clip(x * 0.2 + 0.5, 0.0, 1.0)
