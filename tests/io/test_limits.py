"""Server caps (cmce.io.limits), bundle file checks and code-free loading (cmce.method.bundle), temporary
folders that do not outlive their process (cmce.serve.workdirs)."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import DEFAULT_BUNDLE, ROOT

from cmce.errors import BundleError, HubError, LimitError
from cmce.io.archives import ArchiveLimits
from cmce.io.images import ImageLimits
from cmce.io.limits import BundleAllowList, ServerLimits, SlidingQuota, check_request_bytes, upload_size_cap
from cmce.method.bundle import BUNDLE_FILES, check_bundle_files, load_bundle
from cmce.serve.workdirs import TempFolders, sweep

MIB = 2**20

# --------------------------------------------------------------------------- limits


def test_upload_cap_derives_from_image_archive_and_request_caps():
    assert upload_size_cap(ImageLimits(max_bytes=25 * MIB), ArchiveLimits(max_total_bytes=100 * MIB)) == 100 * MIB
    assert upload_size_cap(ImageLimits(max_bytes=300 * MIB), ArchiveLimits(max_total_bytes=100 * MIB)) == 300 * MIB
    assert upload_size_cap(request_bytes=7 * MIB) == 7 * MIB


def test_server_limits_from_env():
    limits = ServerLimits.from_env({"CMCE_MAX_REQUEST_MB": "30", "CMCE_QUOTA_MB_PER_HOUR": "90",
                                    "CMCE_QUOTA_ENTRIES_PER_HOUR": "12", "CMCE_BUNDLE_LOADS_PER_HOUR": "3",
                                    "CMCE_MAX_BUNDLE_MB": "5", "CMCE_INDEX_CONCURRENCY": "1",
                                    "CMCE_SEARCH_CONCURRENCY": "3", "CMCE_QUEUE_SIZE": "9"})
    assert (limits.max_request_bytes, limits.max_file_bytes) == (30 * MIB, 30 * MIB)
    assert (limits.quota_bytes_per_hour, limits.quota_entries_per_hour, limits.bundle_loads_per_hour) == (
        90 * MIB, 12, 3)
    assert (limits.max_bundle_bytes, limits.search_concurrency, limits.queue_size) == (5 * MIB, 3, 9)
    default = ServerLimits.from_env({})
    assert default.max_file_bytes == min(default.max_request_bytes, 500 * MIB)
    assert len(default.describe()) == 10 and default.max_sessions == 200
    assert ServerLimits.from_env({"CMCE_MAX_SESSIONS": "7"}).max_sessions == 7
    for bad in ("0", "-3", "x", "1.5"):
        with pytest.raises(LimitError, match="CMCE_QUEUE_SIZE"):
            ServerLimits.from_env({"CMCE_QUEUE_SIZE": bad})


def test_request_bytes_cap():
    assert check_request_bytes([MIB, 2 * MIB], 3 * MIB) == 3 * MIB
    with pytest.raises(LimitError, match=r"3\.0 MiB.*2\.0 MiB allowed per indexing request.*CMCE_MAX_REQUEST_MB"):
        check_request_bytes([MIB, 2 * MIB], 2 * MIB)


def test_sliding_quota_refuses_then_frees_after_the_window():
    now = [1000.0]
    quota = SlidingQuota(10, window_s=60, what="faces added", clock=lambda: now[0])
    quota.charge(6)
    quota.check(4)
    with pytest.raises(LimitError, match=r"quota reached.*faces added.*\(4 left\); try again in 60 s"):
        quota.check(5)
    now[0] += 30
    quota.take(4)
    with pytest.raises(LimitError, match="try again in 30 s"):
        quota.take(1)
    assert quota.used() == 10
    now[0] += 30.5  # the first 6 left the window
    assert quota.used() == 4
    quota.take(6)


def test_allow_list(tmp_path):
    folder = tmp_path / "b"
    folder.mkdir()
    allow = BundleAllowList.parse(f"org/one, {folder}")
    assert allow.refusal("org/one") is None
    assert allow.refusal(str(folder)) is None
    assert "CMCE_BUNDLES" in allow.refusal("org/two")
    other = tmp_path / "c"
    other.mkdir()
    assert "not among the bundles" in allow.refusal(str(other))
    missing = str(other) + "-missing"  # an existing folder and a missing one are refused alike (no oracle)
    assert allow.refusal(str(other)).replace(str(other), "X") == allow.refusal(missing).replace(missing, "X")
    assert len(allow.refusal("a" * 1_000_000)) < 300  # the echo is cut
    assert BundleAllowList.parse("hub:*").refusal("anyone/anything") is None
    assert BundleAllowList.parse("").refusal("org/one") is not None  # default: shipped bundles only
    assert BundleAllowList.from_env({"CMCE_ALLOW_LOCAL_BUNDLES": "1"}).refusal(str(other)) is None
    with pytest.raises(LimitError, match="neither a Hub id"):
        BundleAllowList.parse("not a bundle!")


# --------------------------------------------------------------------------- bundle files


def test_check_bundle_files_counts_only_bundle_files():
    sizes = {"config.json": 4_000, "model.safetensors": 3 * MIB, "baselines.safetensors": 2 * MIB,
             "README.md": 9_000, "pytorch_model.bin": 10 * 2**30, "evil.py": 100}
    assert check_bundle_files(sizes, 6 * MIB) == 4_000 + 5 * MIB + 9_000
    with pytest.raises(BundleError, match=r"hf://x: its files hold 5\.0 MiB .*over the 4 MiB.*CMCE_MAX_BUNDLE_MB"):
        check_bundle_files(sizes, 4 * MIB, "hf://x")
    with pytest.raises(BundleError, match="model.safetensors missing"):
        check_bundle_files({"config.json": 1, "model.bin": 5}, MIB)
    with pytest.raises(BundleError, match="size of model.safetensors is not listed"):
        check_bundle_files({"config.json": 1, "model.safetensors": None}, MIB)


needs_bundle = pytest.mark.skipif(not (DEFAULT_BUNDLE / "config.json").is_file(), reason="default bundle not built")


@needs_bundle
def test_local_bundle_over_the_cap_is_refused_before_reading():
    with pytest.raises(BundleError, match="over the 1 MiB allowed"):
        load_bundle(DEFAULT_BUNDLE, max_bytes=MIB)
    assert load_bundle(DEFAULT_BUNDLE, max_bytes=64 * MIB).query_model


@needs_bundle
def test_loading_never_runs_code_from_the_bundle(tmp_path):
    """A folder with a pickle whose unpickling would write a file, and .py files that would too:
    they are ignored (never opened); a pickle in place of model.safetensors is refused."""
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "pwned"))

    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    (bundle / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    (bundle / "model.pkl").write_bytes(pickle.dumps(Payload()))
    code = f"from pathlib import Path\nPath({str(marker)!r}).write_text('pwned')\n"
    for name in ("__init__.py", "modeling.py", "config.py"):
        (bundle / name).write_text(code)
    loaded = load_bundle(bundle)
    assert loaded.gallery_models and not marker.exists()

    (bundle / "model.safetensors").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(BundleError, match="model.safetensors"):
        load_bundle(bundle, max_bytes=None)
    assert not marker.exists()
    assert set(BUNDLE_FILES) == {"config.json", "model.safetensors", "baselines.safetensors", "README.md"}


def test_offline_hub_load_fails_fast(no_network):
    """HF_HUB_OFFLINE (set by conftest): a Hub id not in the cache fails at once, saying why, with no network attempt."""
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set and the bundle is not in the local cache"):
        load_bundle("nobody/cmce-not-cached", cache_dir=os.environ["CMCE_CACHE_DIR"])


# --------------------------------------------------------------------------- temporary folders


_CHILD = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    from cmce.serve.workdirs import TempFolders
    folders = TempFolders({tmp!r})
    for kind in ("session", "session", "examples"):
        (folders.mkdtemp(kind) / "data.bin").write_bytes(b"x" * 1000)
    print("ready", flush=True)
    if sys.argv[1] == "hang":
        time.sleep(600)
""")


def _child(tmp: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD.format(root=str(ROOT), tmp=str(tmp)), mode],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _ours(tmp: Path) -> list[Path]:
    return sorted(p for p in tmp.iterdir() if p.name.startswith("cmce-"))


def test_temp_folders_removed_at_exit_and_swept_after_kill(tmp_path):
    proc = _child(tmp_path, "exit")
    assert proc.wait(30) == 0
    assert _ours(tmp_path) == []  # a normal exit cleans up

    killed = _child(tmp_path, "hang")
    alive = _child(tmp_path, "hang")
    try:
        assert len(_ours(tmp_path)) == 8  # 3 folders + 1 lock each
        killed.kill()
        killed.wait(30)
        assert len(_ours(tmp_path)) == 8  # kill -9 leaves them behind ...
        for _ in range(5):  # ... until the next start; restarts never make them grow
            folders = TempFolders(tmp_path)
            folders.mkdtemp("session")
            folders.cleanup()
            left = _ours(tmp_path)
            assert len(left) == 4 and all(f"{alive.pid:x}" in p.name for p in left), left  # the live one's stay
        assert sweep(tmp_path) == []
    finally:
        alive.kill()
        alive.wait(30)
    assert len(sweep(tmp_path)) == 4 and _ours(tmp_path) == []
