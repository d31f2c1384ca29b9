"""Layer surgery: trainable initial states for recurrent layers whose call the graph does not show.

A subclassed model, or a custom layer inside a Functional model, calls its
recurrent layers from Python code the rewrite cannot change. Surgery reaches
them through attributes instead: every recurrent layer held by an attribute
(at any depth, in lists and dicts of layers, inside custom layers and
subclassed submodels) is replaced, in the copy, by a `TrainableInitialStateRNN`
around it. The wrapper starts the layer from its learned state, gives that
state to code that asks `layer.get_initial_state(...)`, and keeps an
`initial_state` the caller passes (a decoder fed by its encoder). A Functional
or Sequential submodel held by an attribute is retrofitted by the graph
rewrite and put in its place.

A subclassed model is copied the way Keras copies it: from its config, with
its custom classes in scope, built from its build config (or on a probe batch),
then its whole state copied (`state_copy.copy_state`). Where no copy can be
made, the error says why and offers `in_place=True`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Container, Iterator
from typing import Any

from rnn_state_rewriter.backend import Adapter
from rnn_state_rewriter.layers import classes_of

__all__ = ["Site", "config_holds", "find_sites", "is_pending", "remember", "replace", "resolve", "unwrap_all"]


@dataclasses.dataclass(frozen=True)
class Site:
    """Where a layer is held: `owner.key`, or `container[key]` for a list or dict attribute of `owner`.

    `path` names the place by attributes from the root (`"decoder/gru"`,
    `"blocks/0/lstm"`): a copy made from config names its layers anew, but
    holds them in the same attributes, so the executors look places up by
    `steps`, the attributes and keys from the root (`resolve`).
    `name` names the layer as users know it, by the Keras names of the layers
    it sits in, as its variable paths do (`"decoder/gru"`,
    `"time_distributed/gru"`); where two layers would have the same name, the
    second is named by its attributes.
    """

    owner: Any
    container: Any
    key: Any
    path: str
    layer: Any
    name: str = ""
    steps: tuple[tuple[str, Any], ...] = ()  # (attribute, key in the list or dict it holds, or None), from the root


def _internal_attributes(adapter: Adapter) -> frozenset[str]:
    """The attributes Keras itself sets on every layer and model: never a user's sublayer."""
    return _internal_attributes_of(adapter.keras_api)


@functools.cache
def _internal_attributes_of(api: Any) -> frozenset[str]:
    return frozenset(vars(api.layers.Layer())) | frozenset(vars(api.Model()))


def _entries(owner: Any, adapter: Adapter) -> Iterator[tuple[Any, Any, str, Any, str]]:
    """`(container, key, path, value, attribute)` of every value an owner holds in an attribute, a list or a
    dict.

    A private attribute counts only where it holds a value itself: Keras and
    TensorFlow keep their own bookkeeping in private lists and dicts.
    """
    internal = _internal_attributes(adapter)
    for name, value in list(adapter.attributes(owner).items()):
        if name in internal or name.startswith("__"):
            continue
        if name.startswith("_") and isinstance(value, (list, tuple, dict)):
            continue
        if isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                yield value, index, f"{name}/{index}", item, name
        elif isinstance(value, dict):
            for key, item in list(value.items()):
                yield value, key, f"{name}/{key}", item, name
        else:
            yield None, name, name, value, name


def find_sites(adapter: Adapter, root: Any, prefix: str = "", named: str | None = None) -> list[Site]:
    """Every recurrent layer, and graph submodel, that `root`'s attributes reach, once per place held.

    `prefix` starts every site's `path`, `named` (default: `prefix`) its
    `name`. A layer held in several places is found once, at the first.

    Custom layers, subclassed submodels and wrappers (`TimeDistributed`) are
    looked into at any depth; recurrent layers and graph submodels are not (the
    graph rewrite handles what a graph submodel holds).
    """
    api = adapter.keras_api
    sites: list[Site] = []
    seen: set[int] = set()
    names: dict[str, int] = {}

    def visit(owner: Any, path: str, name: str, steps: tuple[tuple[str, Any], ...]) -> None:
        seen.add(id(owner))
        for container, key, where, value, attribute in _entries(owner, adapter):
            if not isinstance(value, api.layers.Layer) or value is owner:
                continue
            place, place_name = f"{path}{where}", f"{name}{value.name}"
            step = (*steps, (attribute, None if container is None else key))
            if names.setdefault(place_name, id(value)) != id(value):
                place_name = place
            if adapter.recurrent_kind(value) is not None or _is_graph_model(adapter, value):
                first = next((s for s in sites if s.layer is value), None)
                if first is not None:
                    place, place_name = first.path, first.name
                sites.append(Site(owner, container, key, place, value, place_name, step))
            elif id(value) not in seen:
                visit(value, place + "/", place_name + "/", step)

    visit(root, prefix, prefix if named is None else named, ())
    return sites


def resolve(adapter: Adapter, root: Any, site: Site) -> Site:
    """The place of `root` that `site` names by its steps (found in another object, the original of `root`
    or `root` before a change): the same site, with `root`'s owner, container and layer there.

    Raises:
        ValueError: if `root` holds no layer at that place (a copy made otherwise than its original).
    """
    owner, container, key, value = None, None, None, root
    for attribute, index in site.steps:
        owner = value
        held = adapter.attributes(owner).get(attribute, _ABSENT)
        container, key, value = (None, attribute, held) if index is None else (held, index, _ABSENT)
        if index is not None and isinstance(held, (list, tuple)) and isinstance(index, int) and index < len(held):
            value = held[index]
        elif index is not None and isinstance(held, dict):
            value = held.get(index, _ABSENT)
    if value is _ABSENT or not isinstance(value, adapter.keras_api.layers.Layer):
        raise ValueError(
            f"{type(root).__name__} '{getattr(root, 'name', '')}' holds no layer at '{site.path}', where its "
            f"original holds '{site.layer.name}': it was copied into another structure. Retrofit the original "
            "itself with `in_place=True`, or give its class a `get_config()` that rebuilds what it holds."
        )
    return dataclasses.replace(site, owner=owner, container=container, key=key, layer=value)


_ABSENT = object()


def config_holds(adapter: Adapter, owner: Any, layer: Any) -> bool:
    """Whether `owner`'s config carries `layer` serialized (a `TimeDistributed`'s `layer`), so that loading
    the owner rebuilds it: then nothing needs remembering."""
    saving = adapter.keras_api.saving
    name = saving.get_registered_name(type(layer))

    def holds(value: Any) -> bool:
        if isinstance(value, dict):
            inner = value.get("config")
            named = isinstance(inner, dict) and inner.get("name") == layer.name
            if named and name in (value.get("registered_name"), value.get("class_name")):
                return True
            return any(holds(item) for item in value.values())
        return isinstance(value, list) and any(holds(item) for item in value)

    try:
        return holds(saving.serialize_keras_object(owner.get_config()))
    except Exception:  # noqa: BLE001 (an owner whose config cannot be serialized carries nothing)
        return False


def _is_graph_model(adapter: Adapter, layer: Any) -> bool:
    return bool(adapter.is_functional(layer) or adapter.is_sequential(layer))


def replace(adapter: Adapter, sites: list[Site], new_for: Callable[[Site], Any]) -> int:
    """Puts `new_for(site)` where each site's layer was (None: left as it is); returns how many changed.

    A layer held in several places gets one replacement, put in each.
    """
    made: dict[int, Any] = {}
    changed = 0
    for site in sites:
        if id(site.layer) not in made:
            made[id(site.layer)] = new_for(site)
        new = made[id(site.layer)]
        if new is not None and new is not site.layer:
            adapter.replace_sublayer(site.owner, site.container, site.key, site.layer, new)
            changed += 1
    return changed


def unwrap_all(adapter: Adapter, root: Any, sites: list[Site], graph: Callable[[Site], Any]) -> int:
    """Replaces every `TrainableInitialStateRNN` at `sites` (places of `root`) by the layer it wraps.

    A graph submodel held there is replaced by `graph(site)` (the graph
    rewrite's removal of the submodel at that site).
    """

    def plain(site: Site) -> Any:
        if adapter.recurrent_kind(site.layer) == "trainable":
            return site.layer.layer
        return graph(site) if _is_graph_model(adapter, site.layer) else None

    changed = replace(adapter, sites, plain)
    if isinstance(root, Remembers):  # nothing left to remember: the object saves as its own class again
        root.__class__ = type(root)._rsr_base_class  # type: ignore[attr-defined]
    return changed


# ----------------------------------------------------------------------------
# Saving: a retrofitted owner remembers where its wrappers are
# ----------------------------------------------------------------------------

KEY = "rnn_state_rewriter"
REGISTERED_NAME = "rnn_state_rewriter>Retrofitted"
_WRAPPER_OPTIONS = ("initializer", "regularizer", "constraint", "noise_stddev", "context_dim", "num_ids")


class Remembers:
    """Mixed into the class of a model or layer whose attributes hold wrappers put there by surgery.

    Its config is the class's own plus where the wrappers are and their
    options, and it is registered under one name (`rnn_state_rewriter>
    Retrofitted`) whose `from_config` rebuilds the object through its own
    class, then wraps the same attributes again: a `.keras` file of a
    retrofitted subclassed model or custom layer loads with its learned
    states, for any class Keras can load (a registered one).
    """

    _rsr_package: str  # "keras" or "tf_keras": the registry the class names are looked up in
    _rsr_base: str
    _rsr_wrapped: dict[str, dict[str, Any]]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()  # type: ignore[misc]
        return {**config, KEY: {"base": self._rsr_base, "wrapped": self._rsr_wrapped}}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        from rnn_state_rewriter.backend import adapter_for

        config = dict(config)
        remembered = config.pop(KEY)
        base = _registered_class(cls, remembered["base"])
        instance = base.from_config(config)
        adapter = adapter_for(instance)
        if instance.built:  # a layer that makes its recurrent layers in `build` is checked once built
            _check_sites(adapter, instance, remembered["wrapped"])
        _remember(adapter, instance, remembered["wrapped"])
        object.__setattr__(instance, "_rsr_pending", True)
        return instance

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """A loader that builds the object by calling it (a graph model's layer) wraps it again after."""
        outputs = super().__call__(*args, **kwargs)  # type: ignore[misc]
        finish_pending(self)
        return outputs

    def build_from_config(self, config: dict[str, Any]) -> None:
        """Builds the object as its class does, then wraps the remembered layers (built now) again."""
        super().build_from_config(config)  # type: ignore[misc]
        if getattr(self, "_rsr_pending", False):
            object.__setattr__(self, "_rsr_pending", False)
            _wrap_again(self)


def is_pending(layer: Any) -> bool:
    """Whether `layer`, made from a remembering config, puts its wrappers back once it is built."""
    return bool(getattr(layer, "_rsr_pending", False))


def finish_pending(layer: Any) -> None:
    """Wraps again the remembered layers of a copy made from config that its graph has built (not Keras' loader)."""
    if getattr(layer, "_rsr_pending", False):
        object.__setattr__(layer, "_rsr_pending", False)
        _wrap_again(layer)


def _check_sites(adapter: Adapter, instance: Any, wrapped: dict[str, Any]) -> dict[str, Site]:
    """The sites of `instance` by place; raises if a remembered place holds no recurrent layer.

    Raises:
        ValueError: naming the places that hold none.
    """
    sites = {site.path: site for site in find_sites(adapter, instance)}
    missing = sorted(set(wrapped) - set(sites))
    if missing:
        raise ValueError(
            f"{type(instance).__name__} '{instance.name}' was saved with trainable initial states at {missing}, "
            "but the object its config rebuilds holds no recurrent layer there."
        )
    return sites


def _wrap_again(instance: Any) -> None:
    from rnn_state_rewriter.backend import adapter_for

    adapter = adapter_for(instance)
    sites = _check_sites(adapter, instance, instance._rsr_wrapped)
    for path, options in instance._rsr_wrapped.items():
        site = sites[path]
        wrapper = classes_of(adapter.GENERATION).wrapper(site.layer, name=site.layer.name, **options)
        if site.layer.built:
            wrapper.build(None)
        adapter.replace_sublayer(site.owner, site.container, site.key, site.layer, wrapper)


def _registered_class(loader: Any, name: str) -> Any:
    saving = __import__(loader._rsr_package).saving
    found = saving.get_registered_object(name)
    if isinstance(found, type) and issubclass(found, Remembers):  # a retrofitted object's own class, in scope
        found = getattr(found, "_rsr_base_class", None)
    if found is None:
        raise TypeError(
            f"Could not locate class '{name}', the class of an object retrofitted with trainable initial "
            "states. Register it with `@keras.saving.register_keras_serializable()` (or pass it in "
            "`custom_objects`), and import it before loading the file."
        )
    return found


def wrapper_options(wrapper: Any) -> dict[str, Any]:
    """The options a wrapper was made with, serialized as its config holds them."""
    config = wrapper.get_config()
    return {name: config[name] for name in _WRAPPER_OPTIONS if config.get(name) is not None}


def remember(adapter: Adapter, root: Any, sites: list[Site], prefix: str, made: Container[int]) -> None:
    """Lets `root` save where the wrappers in `made` (by `id`) now are (at `sites`, named from `prefix`), so
    that loading a `.keras` file puts them back.

    A wrapper that its owner's config carries already (the `layer` of a
    `TimeDistributed`) loads back through that config: the owner keeps its class.
    """
    now = [resolve(adapter, root, site) for site in sites]  # what each place holds now
    wrapped = {
        site.path[len(prefix) :]: wrapper_options(site.layer)
        for site in now
        if id(site.layer) in made and not config_holds(adapter, site.owner, site.layer)
    }
    if wrapped:
        _remember(adapter, root, wrapped)


def _remember(adapter: Adapter, root: Any, wrapped: dict[str, dict[str, Any]]) -> None:
    """Makes `root` save where its wrappers are (paths from `root`), so that loading it puts them back."""
    base = type(root)._rsr_base_class if isinstance(root, Remembers) else type(root)  # type: ignore[attr-defined]
    root.__class__ = remembering_class(adapter, base)
    object.__setattr__(root, "_rsr_base", adapter.keras_api.saving.get_registered_name(base))
    object.__setattr__(root, "_rsr_wrapped", dict(wrapped))


def remembering_class(adapter: Adapter, base: type) -> type:
    """`base` with its generation's loader mixed in, named as `base`, saved under the loader's name."""
    package = adapter.keras_api.__name__
    if (package, base) not in _REMEMBERING:
        namespace = {"__module__": base.__module__, "__qualname__": base.__qualname__, "_rsr_base_class": base}
        cls = type(base.__name__, (loader(package), base), namespace)
        adapter.registered_names()[cls] = REGISTERED_NAME
        _REMEMBERING[package, base] = cls
    return _REMEMBERING[package, base]


_REMEMBERING: dict[tuple[str, type], type] = {}  # one class per generation and base class


@functools.cache
def loader(package: str) -> type:
    """The class registered as `rnn_state_rewriter>Retrofitted` in a generation's registry (`binding.py`)."""
    return type("Retrofitted", (Remembers,), {"_rsr_package": package, "__module__": __name__})
