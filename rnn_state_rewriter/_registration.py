"""Registering the package's classes with a Keras generation as soon as it is imported, in any order.

Keras finds the class of a saved layer only through its registry, so a file
holding `TrainableInitialState` layers (or objects retrofitted by surgery)
loads only once the package's classes are registered, which `binding.bind`
does. Importing the package must not import Keras (the command line starts
before TensorFlow, and a script may never use Keras), so where a generation is
not imported yet, `install()` puts a finder on `sys.meta_path` that lets the
generation's package import as usual and then binds it. The finder imports
nothing itself and leaves every other module alone.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from rnn_state_rewriter.generation import Generation

__all__ = ["GENERATIONS", "install"]

# A generation's package -> the generation.
GENERATIONS = {generation.package: generation for generation in Generation}


def _register(generation: Generation) -> None:
    """Binds a generation (`binding.bind`); a failure must not break the user's own import of Keras."""
    try:
        importlib.import_module("rnn_state_rewriter.binding").bind(generation)
    except Exception as error:  # noqa: BLE001 (any failure becomes a warning: the user's import goes on)
        warnings.warn(
            f"rnn_state_rewriter could not register its layers with Keras ({type(error).__name__}: {error}); "
            "saved models holding them do not load until `rnn_state_rewriter.binding.bind` succeeds.",
            ImportWarning,
            stacklevel=2,
        )


class _ThenRegister(importlib.abc.Loader):
    """A generation's own loader, followed by binding the package's classes to the generation."""

    def __init__(self, loader: importlib.abc.Loader, generation: Generation, done: Callable[[], None]) -> None:
        self.loader = loader
        self.generation = generation
        self.done = done

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # The module keeps its own loader: importlib.resources and reloading go to it.
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        self.done()
        _register(self.generation)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds a generation's package with the other finders, and registers the classes after it has run."""

    def __init__(self, pending: dict[str, Generation]) -> None:
        self.pending = dict(pending)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        generation = self.pending.get(fullname)
        if generation is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None  # not installed: Python raises its own ModuleNotFoundError
        if spec.loader is not None:  # (a spec may be found without being loaded: `importlib.util.find_spec`)
            spec.loader = _ThenRegister(spec.loader, generation, lambda: self._done(fullname))
        return spec

    def _done(self, fullname: str) -> None:
        """A generation is imported: from now on it is found in `sys.modules`."""
        self.pending.pop(fullname, None)
        if not self.pending and self in sys.meta_path:
            sys.meta_path.remove(self)


def install() -> None:
    """Registers the classes with every generation imported already, and with the others when they are."""
    pending = {}
    for package, generation in GENERATIONS.items():
        if package in sys.modules:
            _register(generation)
        else:
            pending[package] = generation
    if pending and not any(isinstance(finder, _AfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(pending))
