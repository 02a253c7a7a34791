"""A sweep's own Ray, reachable from this machine only.

Ray's servers (GCS, raylet, object manager, workers, agents) bind every interface of a node whose IP
is the machine's network address, and ``ray.init(_node_ip_address="127.0.0.1")`` is turned back into
that address on Linux. Ray's local-only mode (its default on macOS and Windows, asked for with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) makes the node IP 127.0.0.1, and every server then binds
loopback (``tests/test_security.py`` lists the sockets). Ray reads that setting when it is imported,
so it is set before the driver imports Ray.

Ray's token authentication is on for a local cluster; by default Ray writes the token to
``~/.ray/auth_token`` with the process umask (readable by every user of the machine on most
systems). A local sweep instead gives Ray a fresh token in its environment (``RAY_AUTH_TOKEN``,
inherited by Ray's processes, readable only by this user), and tightens an existing token file to
mode 600. A token the user set (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``RAY_AUTH_MODE``) is left
as it is.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
TOKEN_FILE = Path("~/.ray/auth_token")


@contextlib.contextmanager
def private_local_ray() -> Iterator[None]:
    """Inside: a local-only node on 127.0.0.1 (read when Ray is imported, so the CLI enters this first) and a
    token no other user can read; the environment as it was afterwards."""
    saved = {name: os.environ.get(name) for name in (LOCAL_ONLY_ENV, "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ[LOCAL_ONLY_ENV] = "0"
    if not {"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"} & os.environ.keys():
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    token_file = TOKEN_FILE.expanduser()
    if token_file.is_file() and token_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        token_file.chmod(0o600)
        print(f"vaesweep: note: {token_file} (a Ray token) was readable by other users; it is now mode 600",
              file=sys.stderr)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
