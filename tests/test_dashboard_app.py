"""The dashboard server as `ecotaxa serve` runs it: a blocking process configured by the environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from sqlalchemy import select

from ecotaxa_core.db.models import Image
from validation_project import make_validation_project

ECOTAXA = str(Path(sys.executable).with_name("ecotaxa"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_serves_the_page_and_the_vault_but_nothing_else(sqlite_instance, ndsb_subset):
    inst = sqlite_instance
    make_validation_project(inst, ndsb_subset)
    with inst.sessions() as s:
        thumb = s.scalar(select(Image.thumb_path).limit(1))
    port = _free_port()
    env = dict(os.environ, ECOTAXA_HOME=str(inst.settings.home),
               ECOTAXA_DATABASE_URL=inst.settings.database_url)
    proc = subprocess.Popen([ECOTAXA, "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.2)
        base = f"http://127.0.0.1:{port}"
        status, body = _get(base + "/")
        assert status == 200 and b"EcoTaxa validation" in body
        status, body = _get(f"{base}/vault/{thumb}")
        assert status == 200 and body == inst.vault.path(thumb).read_bytes()
        assert _get(f"{base}/vault/../ecotaxa.db")[0] in (403, 404)
        assert _get(f"{base}/vault/%2e%2e/ecotaxa.db")[0] in (403, 404)
        assert proc.poll() is None  # it blocks while serving
    finally:
        proc.terminate()
        proc.wait(timeout=30)
