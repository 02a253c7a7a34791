"""What a local sweep exposes: every socket of the sweep's processes listens on loopback, Ray's token is
readable by this user only, and the sweep's MLflow server refuses a request for a foreign host. Real
Ray, MLflow and MNIST through the CLI. Marked slow."""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sweep_helpers import NO_ESTIMATE, VAESWEEP, descendants, server_below, wait_for_epochs, write_config

pytestmark = pytest.mark.slow


def listening(pids: set[int]) -> dict[str, str]:
    """'address:port' -> process name of each TCP socket these processes listen on (read from /proc)."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:  # ended meanwhile
            continue
    found = {}
    for table, family in (("tcp", 4), ("tcp6", 6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            raw, port = fields[1].split(":")
            packed = bytes.fromhex(raw)
            # /proc writes each 32-bit word in host (little-endian) order
            ip = ipaddress.ip_address(b"".join(packed[i:i + 4][::-1] for i in range(0, len(packed), 4)))
            name = Path(f"/proc/{inodes[fields[9]]}/comm").read_text().strip()
            found[f"{ip}:{int(port, 16)}"] = name
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.rsplit(":", 1)[0])
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def test_a_local_sweep_listens_on_loopback_only_and_keeps_rays_token_private(mnist_dir, tmp_path):
    home = tmp_path / "home"
    token = home / ".ray" / "auth_token"
    token.parent.mkdir(parents=True)
    token.write_text("an earlier Ray's token")
    token.chmod(0o644)  # as Ray writes it under the usual umask
    config = write_config(tmp_path, "private", [0.0, 1.0], train={"epochs": 3, "train_subset": 6000, "test_subset": 100})
    log = tmp_path / "driver.log"
    with open(log, "wb") as out:
        driver = subprocess.Popen([str(VAESWEEP), "run", str(config), "--data-dir", str(mnist_dir), NO_ESTIMATE], stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "HOME": str(home)})
    try:
        wait_for_epochs(tmp_path / "runs" / "private", 1, driver)
        sockets = listening(descendants(driver.pid) | {driver.pid})
        server = server_below(driver.pid, set())
        assert server is not None, "the sweep's own MLflow server runs below its driver"
        (address,) = set(listening(descendants(server) | {server}))
        uri = f"http://{address}"
        refused = urllib.request.Request(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1",
                                         headers={"Host": "attacker.example"})
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(refused, timeout=30)
        assert 400 <= answer.value.code < 500, answer.value.code
        with urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30) as ok:
            assert ok.status == 200, "the same request for the server's own host is served"
    finally:
        assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
    names = set(sockets.values())
    assert {"gcs_server", "raylet"} <= names and any("mlflow" in n or "gunicorn" in n or "uvicorn" in n or "python" in n
                                                      for n in names), sockets
    exposed = {address: name for address, name in sockets.items() if not is_loopback(address)}
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.read_text() == "an earlier Ray's token"
    assert f"vaesweep: note: {token} (a Ray token) was readable by other users; it is now mode 600" in log.read_text()
