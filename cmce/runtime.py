"""What a process runs on: the Ray cluster it joins.

The lowest floor: ``cmce.gallery.archive`` (archive index builds) and ``cmce.pipeline``
(indexing jobs) both join clusters through ``connect_ray``; neither has to import the other.
"""

from __future__ import annotations

import logging
import os
import socket

from cmce.errors import CmceError

__all__ = ["RAY_CONNECT_TIMEOUT_S", "RAY_HINT", "connect_ray", "require_ray"]

RAY_HINT = "Ray is not installed: pip install -r requirements-scale.txt (ray[data])"
#: Seconds to wait for a Ray head's port to answer before giving up.
RAY_CONNECT_TIMEOUT_S = 3.0


def require_ray():
    """The ``ray`` module (with ``ray.data``), or a ``CmceError`` that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise CmceError(RAY_HINT) from e
    return ray


def connect_ray(address: str = "local", *, num_cpus: int | None = None, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> bool:
    """Join a Ray cluster, or start a local one; reuse the one this process already joined.

    Args:
        address: ``"local"`` (start one on this machine), ``"auto"`` (the cluster this
            machine belongs to), or a head's ``HOST:PORT`` / ``ray://HOST:PORT``.
        num_cpus: CPUs of a local cluster (default: all).
        timeout_s: seconds a head's port may take to answer.

    Every ``CMCE_*`` variable of this process's environment is passed to the cluster's
    workers (``runtime_env``), so settings such as ``CMCE_FACENET_RUNTIME=int8`` hold on
    every machine.

    Returns:
        Whether this call started the connection (the caller then shuts it down).

    Raises:
        CmceError: Ray missing, or the cluster does not answer (within ``timeout_s``
            for an address), with the reason.
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    # this process's cmce settings (e.g. CMCE_FACENET_RUNTIME=int8, CMCE_TORCH_THREADS) reach every
    # worker of the cluster, also on other machines, whose environment is not this one
    settings = {k: v for k, v in os.environ.items() if k.startswith("CMCE_")}
    if settings:
        kwargs["runtime_env"] = {"env_vars": settings}
    if address == "local":
        ray.init(num_cpus=num_cpus, **kwargs)
        return True
    if address != "auto":
        host, _, port = address.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit():
            raise CmceError(f"--ray {address!r}: expected local, auto, HOST:PORT or ray://HOST:PORT")
        try:
            socket.create_connection((host, int(port)), timeout=timeout_s).close()
        except OSError as e:
            raise CmceError(f"Ray cluster at {address} does not answer ({e.strerror or e}; waited at most "
                            f"{timeout_s:.0f} s). Is its head running (ray start --head) and the port open?") from e
        # a port that answers but is no Ray head: ray.init retries about once a second, 20 times by default
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", str(max(1, round(timeout_s))))
    try:
        client = address.startswith("ray://")  # Ray Client takes the runtime environment only
        ray.init(address=address, **({k: v for k, v in kwargs.items() if k == "runtime_env"} if client else kwargs))
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise CmceError(f"cannot join the Ray cluster at {address}: {e}") from e
    return True
