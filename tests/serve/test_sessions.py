"""The demo's server state without Gradio: sessions with their quotas and folders, their registry, the engines."""

from __future__ import annotations

import pytest

from cmce.gallery.ingest import GalleryLimits
from cmce.io.limits import ServerLimits
from cmce.method.bundle import default_bundle_path
from cmce.serve.sessions import Engines, Session, SessionRegistry, shipped_bundles
from cmce.serve.workdirs import TempFolders

pytestmark = pytest.mark.skipif(not (default_bundle_path() / "config.json").is_file(), reason="default bundle not built")


@pytest.fixture(scope="module")
def engines() -> Engines:
    engines = Engines(keep=1)
    assert engines.load_default() is not None and engines.default_error is None
    return engines


def test_a_session_takes_its_quotas_and_folder_and_close_removes_it(engines, tmp_path) -> None:
    server = ServerLimits(quota_bytes_per_hour=123, quota_entries_per_hour=7, bundle_loads_per_hour=2)
    session = Session.open(engines.default, GalleryLimits(), server, TempFolders(tmp_path, sweep_on_start=False))
    assert session.workdir.is_dir() and session.workdir.parent == tmp_path
    assert (session.indexed_bytes.limit, session.added_faces.limit, session.bundle_loads.limit) == (123, 7, 2)
    session.close()
    assert session.closed and not session.workdir.exists() and len(session.gallery) == 0


def test_the_registry_closes_a_replaced_session_and_drops_a_closed_tab(engines, tmp_path) -> None:
    temp = TempFolders(tmp_path, sweep_on_start=False)
    registry = SessionRegistry()
    first = registry.register(Session.open(engines.default, GalleryLimits(), ServerLimits(), temp), "tab-1")
    second = registry.register(Session.open(engines.default, GalleryLimits(), ServerLimits(), temp), "tab-1")
    assert first.closed and not second.closed and len(registry) == 1
    other = registry.register(Session.open(engines.default, GalleryLimits(), ServerLimits(), temp), "tab-2")
    registry.drop("tab-1")
    assert second.closed and len(registry) == 1
    registry.expire(other)
    assert other.closed and len(registry) == 0
    registry.drop("never-seen")  # nothing to do, no error
    assert registry.register(Session.open(engines.default, GalleryLimits(), ServerLimits(), temp), None) is not None
    assert len(registry) == 0  # no key: not recorded


def test_the_registry_finds_an_open_session_again_only_for_its_own_client(engines, tmp_path) -> None:
    temp = TempFolders(tmp_path, sweep_on_start=False)
    registry = SessionRegistry()
    session = Session.open(engines.default, GalleryLimits(), ServerLimits(), temp)
    session.client = "10.0.0.1"
    registry.register(session, "tab-1")
    assert registry.held("tab-1", "10.0.0.1") is session
    assert registry.held("tab-1", "10.0.0.2") is None  # another client naming that session gets nothing
    assert registry.held("tab-2", "10.0.0.1") is None and registry.held(None, "10.0.0.1") is None
    session.close()
    assert registry.held("tab-1", "10.0.0.1") is None  # closed


def test_engines_keep_the_default_and_share_a_loaded_bundle(engines) -> None:
    name = next(iter(shipped_bundles(default_bundle_path().parent)))
    assert name == default_bundle_path().name  # the default bundle is listed first
    assert engines.cached(None) and engines.load(None) is engines.default
    assert engines.load(str(default_bundle_path())) is engines.default  # the same folder, the same engine
