"""The seam, the bottom layer: the `Adapter` protocol of a Keras generation.

Keras 3 and tf-keras differ in their tensor operations, in how a functional
graph is walked and rebuilt, and in how weights, state and files are kept.
Each generation has one module that satisfies `Adapter`: `backend/keras3.py`
and `backend/tf_keras.py` (mypy checks both against it), which share what
they do alike in `backend/both.py`. Every read of a private Keras attribute
and every branch on the generation lives in those three modules. The rest
of the package is written once against `Adapter`, and gets the right module
from `adapter_for(obj)`, once per public call, or through the
`GenerationOf` attribute of its layer classes.

The seam imports nothing of the package above it (`generation`, and the
activations Keras 2 files name, at most): the layer classes of a generation are
resolved above it (`layers.classes_of`), and saving's loader is registered by
`binding.py`. This module imports neither generation: `adapter(generation)`
imports its module on first use, so `backend/tf_keras.py` (hence `tf_keras`
and TensorFlow) is imported only when a tf-keras object is seen.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, cast

from rnn_state_rewriter.generation import Generation, generation_of

__all__ = ["Adapter", "adapter", "adapter_for"]

CallSite = tuple[Any, tuple[Any, ...], dict[str, Any], list[Any]]


class Adapter(Protocol):
    """What the rewrite needs from a Keras generation: its classes and its graph."""

    @property
    def keras_api(self) -> ModuleType:
        """The Keras package: `keras` or `tf_keras`."""
        ...

    @property
    def GENERATION(self) -> Generation:  # noqa: N802 (a constant)
        """The generation this module is the seam of."""
        ...

    @property
    def SafeModeScope(self) -> Callable[..., Any]:  # noqa: N802 (a class)
        """The generation's Keras safe-mode context manager."""
        ...

    @property
    def map_tensors(self) -> Callable[..., Any]:
        """`map_structure` over nested tensors."""
        ...

    @property
    def flatten_tensors(self) -> Callable[[Any], list[Any]]:
        """`flatten` of nested tensors."""
        ...

    @property
    def SAVE_EXTENSIONS(self) -> tuple[str, ...]:  # noqa: N802 (a constant)
        """The file extensions `model.save` writes whole models to ("" is a SavedModel folder)."""
        ...

    @property
    def BARE_CLASS_NAMES(self) -> bool:  # noqa: N802 (a constant)
        """Whether loading may look the package's layer classes up by their bare class names (tf-keras' wrappers
        read the layer they wrap in the legacy format), so `binding.py` registers them under those too."""
        ...

    def backend(self) -> str:
        """The backend this generation's models run on: `tensorflow`, `jax` or `torch`."""
        ...

    # The tensor operations of the layers.

    def zero_state(self, layer: Any) -> Any:
        """The built recurrent layer's zero state for a batch of one."""
        ...

    def batch_size(self, inputs: Any, axis: int) -> Any:
        """The size of `axis` of the first tensor of `inputs` (static or dynamic)."""
        ...

    def broadcast_to_batch(self, value: Any, size: Any, shape: Sequence[int], dtype: Any) -> Any:
        """`value` (of `shape`) cast to `dtype` and repeated along a new leading batch axis of `size`."""
        ...

    def noise_source(self) -> Any:
        """What `normal` draws from: a seed generator owned by the layer, or None."""
        ...

    def normal(self, like: Any, stddev: float, source: Any) -> Any:
        """Gaussian noise with the shape and dtype of the tensor `like`."""
        ...

    def to_tensor(self, value: Any) -> Any: ...

    def batch_of(self, size: Any) -> Any:
        """A tensor of shape `(size,)`: what reads as a batch of that size."""
        ...

    def mask_of(self, tensor: Any) -> Any:
        """The Keras mask a tensor carries, or None."""
        ...

    def read(self, variable: Any, dtype: Any) -> Any:
        """The variable's value now, as a tensor of `dtype` that a later assignment to it leaves alone."""
        ...

    def project(self, context: Any, kernel: Any, shape: Sequence[int], dtype: Any) -> Any:
        """`context @ kernel` (`(batch, d) @ (d, prod(shape))`), in `dtype`, reshaped to `(batch, *shape)`."""
        ...

    def lookup(self, ids: Any, table: Any, dtype: Any) -> Any:
        """The rows of `table` at the integer `ids` (`(batch,)` or `(batch, 1)`), in `dtype`; zeros for an id
        outside the table, on every backend."""
        ...

    def prepare_stateful(self, layer: Any) -> None:
        """Lets a built stateful recurrent layer take an `initial_state` nested as its carried state."""
        ...

    def flag(self, value: float) -> Any:
        """A float32 scalar variable that is not a weight: not trained, not saved, not in `layer.weights`.

        A stateful layer's carried state is kept that way; the flag that says
        it was just reset must live exactly as long (a reloaded model starts
        reset).
        """
        ...

    # The graph of Functional and Sequential models, and the layers in them.

    @property
    def RUNTIME_MASKS(self) -> bool:  # noqa: N802 (a constant)
        """Whether masks can reach a layer at run time where the graph shows none."""
        ...

    def recurrent_kind(self, layer: Any) -> str | None: ...

    def is_keras_tensor(self, value: Any) -> bool: ...

    def is_functional(self, model: Any) -> bool: ...

    def is_sequential(self, model: Any) -> bool: ...

    def call_sites(self, model: Any) -> Iterator[CallSite]: ...

    def layer_of(self, tensor: Any) -> Any:
        """The layer whose call made a symbolic tensor, or None."""
        ...

    def fresh_input(self, tensor: Any) -> Any:
        """A new model input like `tensor`, an input of a model."""
        ...

    def model_inputs(self, model: Any) -> Any: ...

    def model_outputs(self, model: Any) -> Any: ...

    def sublayers(self, layer: Any) -> list[Any]: ...

    def split_initial_state(
        self, layer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], Any]: ...

    def call_with_initial_state(
        self,
        layer: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        states: Any,
        *,
        runtime_mask: Callable[[Any], Any] | None = None,
    ) -> Any:
        """Calls a recurrent layer with `initial_state=states` (None: without), keeping its input's mask;
        `runtime_mask(sequences)` makes the mask where one may arrive only at run time (Keras 3)."""
        ...

    def compile_arguments(self, model: Any) -> dict[str, Any] | None: ...

    def copy_into(self, target: Any, source: Any) -> None:
        """Assigns `source`'s value to the variable `target` so that the two never share a buffer."""
        ...

    def detached(self, value: Any) -> Any:
        """A value read from a layer's saved state that shares no buffer with the layer."""
        ...

    def variables(self, layer: Any) -> list[Any]:
        """Every variable of a layer and its sublayers (not the weight handlers of lookup tables)."""
        ...

    def own_variables(self, layer: Any) -> list[Any]:
        """The variables a layer saves itself, in the order its `save_own_variables` numbers them."""
        ...

    def live_arguments(self, layer: Any) -> dict[str, Any]:
        """Constructor arguments a layer holds as live objects its config would turn into code (a `Lambda`'s)."""
        ...

    def copy_vocabulary(self, source: Any, target: Any) -> bool:
        """Copies a lookup layer's vocabulary in memory, as `load_assets` sets it; False if it keeps none."""
        ...

    def attributes(self, owner: Any) -> dict[str, Any]:
        """An object's attributes by name, those a backend keeps aside included (PyTorch's `_modules`)."""
        ...

    def replace_sublayer(self, owner: Any, container: Any, key: Any, old: Any, new: Any) -> None:
        """Puts layer `new` where `owner` holds `old` (`owner.key`, or `container[key]`), tracked in its place."""
        ...

    def registered_names(self) -> dict[type, str]:
        """The registry's map from registered classes to the names saving writes for them (written to)."""
        ...

    def build_like(self, copy: Any, model: Any) -> None:
        """Builds a copy of a subclassed model as loading would: from the original's build config."""
        ...

    def build_in_place_of(self, wrapper: Any, layer: Any) -> None:
        """Builds a wrapper put where `layer` was, its new variables beside the layer's in variable paths."""
        ...

    def scope_of(self, layer: Any) -> Any:
        """A context manager: the name scopes `layer` was built in, so a clone built inside gets its paths."""
        ...

    def rename(self, layer: Any, name: str) -> None:
        """Gives an unbuilt layer another name, which its variables take when it is built."""
        ...

    def carried_states(self, model: Any) -> list[Any]:
        """The variables holding the carried state of the model's stateful recurrent layers."""
        ...

    def predict(self, model: Any, inputs: Any) -> Any:
        """The model's outputs on `inputs` in inference, as fast as one call allows (the self-check)."""
        ...

    def finish_loading(self, layer: Any) -> None:
        """What the generation's loader runs on a layer once all weights are in (tf-keras: `finalize_state`)."""
        ...


def adapter(generation: Generation) -> Adapter:
    """Returns the adapter module of a generation, importing it on first use."""
    return cast(Adapter, importlib.import_module(generation.module))


def adapter_for(obj: Any, *, argument: str = "layer") -> Adapter:
    """Returns the adapter module of the generation `obj` belongs to.

    Raises:
        TypeError: if `obj` is not a Keras object.
    """
    return adapter(generation_of(obj, argument=argument))


if TYPE_CHECKING:  # mypy checks that both adapter modules satisfy the protocol
    from rnn_state_rewriter.backend import keras3, tf_keras

    _KERAS3: Adapter = keras3
    _TF_KERAS: Adapter = tf_keras
