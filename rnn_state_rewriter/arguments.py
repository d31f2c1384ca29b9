"""Checks and expansions of the arguments the layers and the retrofit share.

A per-state argument (`initializer`, `regularizer`, `constraint`) is one
value for every state or a list with one entry per state; `noise_stddev` is a
number >= 0; one initializer object used for several states gives each its own
draw. Errors name the argument, the layer and the value received.
"""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["per_state", "check_noise_stddev", "check_context", "distinct_initializers"]


def per_state(value: Any, count: int, argument: str, owner: str) -> list[Any]:
    """Expands one value to `count` entries, or checks a per-state list has `count`."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(
                f"Argument `{argument}` must have one entry per state of {owner} "
                f"({count}), or be a single value for all of them. Received: "
                f"{argument}={list(value)!r} with {len(value)} entries"
            )
        return list(value)
    return [value] * count


def check_noise_stddev(value: Any, owner: str) -> float:
    """Returns `value` as a float, or raises `ValueError` unless it is a number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) >= 0:
        raise ValueError(f"Argument `noise_stddev` of {owner} must be a number >= 0. Received: noise_stddev={value!r}")
    return float(value)


def check_context(context_dim: Any, num_ids: Any, owner: str) -> tuple[int | None, int | None]:
    """Checks the kind of context states are conditioned on: `context_dim` floats, or ids below `num_ids`.

    Raises:
        ValueError: if either is not a positive integer, or both are given.
    """
    for argument, value in (("context_dim", context_dim), ("num_ids", num_ids)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise ValueError(
                f"Argument `{argument}` of {owner} must be a positive integer or None. Received: {argument}={value!r}"
            )
    if context_dim is not None and num_ids is not None:
        raise ValueError(
            f"Arguments `context_dim` and `num_ids` of {owner} are exclusive: states are conditioned on a "
            f"float context or on integer ids. Received: context_dim={context_dim}, num_ids={num_ids}"
        )
    return (None if context_dim is None else int(context_dim)), (None if num_ids is None else int(num_ids))


def distinct_initializers(initializers: list[Any]) -> list[Any]:
    """Gives each state its own draw: a random initializer already used by an earlier state is re-seeded.

    A Keras initializer object with a fixed seed (or, unseeded, with the seed it
    drew when made) returns the same values on every call, so one object used for
    every state would make them all equal. A later use gets a copy: with seed
    `seed + 1`, `seed + 2`, ... (the first free one) if seeded, so a seeded
    initializer stays reproducible; unseeded, a fresh copy that draws its own
    seed (reproducible under `keras.utils.set_random_seed`). Initializers without
    a seed (zeros, ones, constants) are left as they are.
    """
    used: set[Any] = set()
    result = []
    for initializer in initializers:
        config = initializer.get_config() if hasattr(initializer, "get_config") else {}
        if "seed" not in config:
            result.append(initializer)
            continue
        key = _seed_key(initializer, config)
        if key in used:
            if config["seed"] is None:
                initializer = type(initializer).from_config(config)
            else:
                seed = config["seed"]
                while _seed_key(initializer, {**config, "seed": seed}) in used:
                    seed += 1
                initializer = type(initializer).from_config({**config, "seed": seed})
            config = initializer.get_config()
            key = _seed_key(initializer, config)
        used.add(key)
        result.append(initializer)
    return result


def _seed_key(initializer: Any, config: dict[str, Any]) -> Any:
    """What makes two initializers draw the same values: the object if unseeded, else class and config."""
    if config.get("seed") is None:
        return id(initializer)
    return (type(initializer), tuple(sorted((key, repr(value)) for key, value in config.items())))
