"""A sweep's Ray: joined at ``--address``, or started on this machine, reachable from it only.

Ray's servers (GCS, raylet, object manager, workers, agents) bind every interface of a node whose IP
is the machine's network address, and ``ray.init(_node_ip_address="127.0.0.1")`` is turned back into
that address on Linux. Ray's local-only mode (its default on macOS and Windows) makes the node IP
127.0.0.1, and every server then binds loopback (``tests/test_security.py`` lists the sockets). Ray
reads that setting when it is imported, so it is set before the driver imports Ray.

Ray's token authentication is on for a local cluster; by default Ray writes the token to
``~/.ray/auth_token`` with the process umask (readable by every user of the machine on most
systems). A local sweep instead gives Ray a fresh token in its environment (inherited by Ray's
processes, readable only by this user), and tightens an existing token file to mode 600. A token the
user set is left as it is (sweeps/environment.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from sweeps import environment

TOKEN_FILE = Path("~/.ray/auth_token")


@contextlib.contextmanager
def private_local_ray() -> Iterator[None]:
    """Inside: a local-only node on 127.0.0.1 (read when Ray is imported, so the CLI enters this first) and a
    token no other user can read; the environment as it was afterwards."""
    token_file = TOKEN_FILE.expanduser()
    if token_file.is_file() and token_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        token_file.chmod(0o600)
        print(f"vaesweep: note: {token_file} (a Ray token) was readable by other users; it is now mode 600",
              file=sys.stderr)
    with environment.scoped(environment.private_local_ray()):
        yield


def init_ray(address: str | None, verbose: bool) -> None:
    """Join the cluster at ``address``, or start Ray here with every core; once per driver process."""
    import ray

    if ray.is_initialized():  # connected early to read the cluster's nodes (preflight)
        return
    level = logging.INFO if verbose else logging.WARNING  # "Started a local Ray instance", "Connected to..."
    if address:
        ray.init(address=address, log_to_driver=True, logging_level=level)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=level)
