"""Old names kept for one release: a module's ``__getattr__`` that warns and hands over the new one."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["renamed"]


def renamed(module: str, names: Mapping[str, str], namespace: Mapping[str, Any], why: str = "") -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``names`` (old -> new) of ``module``.

    Reading an old name emits a ``DeprecationWarning`` naming the new one and returns the
    object ``namespace`` holds under the new name; any other name raises ``AttributeError``.

    Example:
        >>> get = renamed("m", {"Old": "New"}, {"New": 42})
        >>> import warnings
        >>> with warnings.catch_warnings(record=True):
        ...     warnings.simplefilter("always")
        ...     get("Old")
        42
    """

    def __getattr__(name: str) -> Any:
        if name in names:
            warnings.warn(f"{module}.{name} is now {names[name]}{f' ({why})' if why else ''}; "
                          f"the old name goes in the next release", DeprecationWarning, stacklevel=2)
            return namespace[names[name]]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
