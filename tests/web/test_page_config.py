"""The page's config holds no object that drags the server along when Gradio copies it.

Gradio deep-copies the Blocks config on every ``/config`` request (each page load, each
``gradio_client.Client``). A bound method of ``DemoServer`` in it (a State's ``delete_callback``)
made every copy copy the server's engines and torch models: with 32 clients connecting at once
the app stopped answering (a 150 s soak: 1,108 errors before, 0 after).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types

import pytest
from conftest import ROOT

pytestmark = pytest.mark.e2e


def _bound_methods(obj, path="config", seen=None):
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, types.MethodType) and not inspect.isclass(obj.__self__) \
            and not isinstance(obj.__self__, types.ModuleType):
        return [f"{path}: {obj!r}"]
    if isinstance(obj, dict):
        return [m for k, v in obj.items() for m in _bound_methods(v, f"{path}[{k!r}]", seen)]
    if isinstance(obj, list | tuple | set):
        return [m for i, v in enumerate(obj) for m in _bound_methods(v, f"{path}[{i}]", seen)]
    return []


def test_the_page_config_holds_no_bound_method_of_an_object(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    app = sys.modules.get("app") or importlib.import_module("app")
    demo = app.create_demo(None)
    assert _bound_methods(demo.config) == []
    # the check can fail: a bound method of the server anywhere in a config is found
    assert _bound_methods({"components": [{"props": {"delete_callback": app.DEMO.expire}}]})
