"""modelyard: a registry for model artifacts.

The flow, one package or module per step: `register` (scan a training output, resolve its
manifest) -> `inspect` (later) -> `store` (content-addressed blobs) -> `catalog` (SQL) ->
`promote` (later) -> `distribute` (later). `Registry` in `registry.py` is the Python API.

Heavy modules load on first use, so `import modelyard` and `modelyard --version` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ArtifactRepository",
    "ListFilters",
    "ModelyardError",
    "RegisterOptions",
    "Registry",
    "Settings",
    "__version__",
]

if TYPE_CHECKING:
    from modelyard.config import Settings
    from modelyard.domain import ListFilters
    from modelyard.errors import ModelyardError
    from modelyard.lifecycle.repository import ArtifactRepository
    from modelyard.register.metadata import RegisterOptions
    from modelyard.registry import Registry

_LAZY = {
    "ArtifactRepository": "modelyard.lifecycle.repository",
    "Registry": "modelyard.registry",
    "Settings": "modelyard.config",
    "RegisterOptions": "modelyard.register.metadata",
    "ListFilters": "modelyard.domain",
    "ModelyardError": "modelyard.errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'modelyard' has no attribute {name!r}")
