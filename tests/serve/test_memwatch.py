"""The memory watch behind CMCE_MEMWATCH: off by default, and it names who holds new objects."""

from __future__ import annotations

import pytest

from cmce.serve import memwatch


class Holder:
    """Holds its entries in a plain dict attribute, as Gradio's SessionState does."""

    def __init__(self) -> None:
        self.entries = {"config": [{"props": {}} for _ in range(3)]}


def test_memwatch_is_off_unless_asked_and_refuses_a_bad_interval():
    assert memwatch.start_from_env({}) is None
    with pytest.raises(ValueError, match="CMCE_MEMWATCH"):
        memwatch.start_from_env({"CMCE_MEMWATCH": "0"})
    heap = memwatch.heap_info()
    assert set(heap) == {"in_use", "free", "mmapped"} and heap["in_use"] > 0


def test_the_holder_of_new_objects_is_named():
    holders = [Holder() for _ in range(5)]
    new = [d for h in holders for d in h.entries["config"]]
    owners = memwatch._owners(new, sample=10)
    assert owners == {f"list < dict < {Holder.__module__}.Holder": 10}  # the dicts, in a list, in a dict, in a Holder
