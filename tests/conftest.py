"""Test set-up: offline, never the user's caches, real LFW faces from ../shared."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports huggingface_hub, gradio or cmce: offline, no telemetry, and a
# private cache folder for converted weights and embeddings.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["CMCE_CACHE_DIR"] = tempfile.mkdtemp(prefix="cmce-test-cache-")
os.environ.pop("CMCE_BUNDLE", None)

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LFW_DIR = Path(os.environ.get("CMCE_LFW_DIR", ROOT.parent / "shared" / "data" / "lfw-train"))

needs_lfw = pytest.mark.skipif(not LFW_DIR.is_dir(), reason=f"LFW images not found at {LFW_DIR}")


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    if not LFW_DIR.is_dir():
        pytest.skip(f"LFW images not found at {LFW_DIR}")
    return LFW_DIR
