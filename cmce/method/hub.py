"""All Hugging Face Hub I/O of cmce: downloading a repo's files and uploading a folder.

Nothing else imports ``huggingface_hub`` for network access. Offline (``HF_HUB_OFFLINE``,
or the Hub unreachable within seconds) only the local cache is read, which fails at once
with a ``HubError`` that says so.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from cmce.errors import HubError

__all__ = ["download_files", "hub_reachable", "upload_folder"]


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub's host answers on port 443 within ``timeout`` seconds."""
    from huggingface_hub import constants

    host = re.sub(r"^https?://", "", constants.ENDPOINT).split("/")[0].split(":")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def download_files(repo_id: str, revision: str | None, patterns: Sequence[str], *,
                   cache_dir: str | os.PathLike | None = None,
                   check_sizes: Callable[[Mapping[str, int | None], str], object] | None = None) -> Path:
    """Download a model repo's files matching ``patterns`` into the Hugging Face cache.

    Online, the repo's metadata (file sizes and the commit ``revision`` points at) is read
    first and handed to ``check_sizes(sizes, "hf://repo@revision")``, which may refuse
    before any file is downloaded; the files are then fetched at that very commit. Offline
    (``HF_HUB_OFFLINE``, or the Hub unreachable) only the local cache is read, which fails
    at once when the files are not in it.

    Returns:
        The local snapshot folder.

    Raises:
        HubError: offline and not cached, no such repo or revision, or the download failed.
    """
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = constants.HF_HUB_OFFLINE or not hub_reachable()
    where = f"{repo_id}@{revision or 'main'}"
    try:
        if not offline:
            info = HfApi(library_name="cmce").model_info(repo_id, revision=revision, files_metadata=True, timeout=10)
            sizes = {s.rfilename: s.size for s in info.siblings or ()}
            if check_sizes is not None:
                check_sizes(sizes, f"hf://{where}")
            revision = info.sha or revision
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=list(patterns), local_files_only=offline,
                etag_timeout=5, library_name="cmce", cache_dir=cache_dir,
            )
        )
    except LocalEntryNotFoundError as e:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hugging Face Hub is unreachable"
        raise HubError(f"{where}: {why} and the bundle is not in the local cache") from e
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise HubError(f"{where}: no such repo or revision on the Hub") from e
    except (HfHubHTTPError, OSError) as e:
        raise HubError(f"{repo_id}: download failed: {e}") from e


def upload_folder(folder: Path, repo_id: str, patterns: Sequence[str], *, revision: str | None = None,
                  private: bool = False, token: str | None = None, commit_message: str = "Upload") -> str:
    """Create the model repo if needed and upload ``folder``'s files matching ``patterns``.

    Returns:
        The commit URL.

    Raises:
        HubError: a network or authentication failure.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                                 commit_message=commit_message, allow_patterns=list(patterns))
    except Exception as e:  # network and auth failures of huggingface_hub
        raise HubError(f"push to {repo_id} failed: {e}") from e
    return str(getattr(info, "commit_url", info))
