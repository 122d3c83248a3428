"""JupyterLab is installed with the kit and serves its notebooks: started headless on a loopback port,
its REST API lists the six numbered notebooks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from vlmkit.grid.notebooks import packaged_notebooks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyter_lab_is_installed_next_to_python():
    lab = Path(sys.executable).parent / "jupyter-lab"
    assert lab.is_file() or shutil.which("jupyter-lab"), "jupyterlab is a dependency of vlmkit"


@pytest.mark.slow
def test_jupyterlab_serves_the_notebooks_headless(tmp_path):
    port, token = _free_port(), "vlmkit-test-token"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={packaged_notebooks()}",
           "--ServerApp.open_browser=False", "--allow-root"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        deadline, listing, last = time.monotonic() + 90, None, ""
        while time.monotonic() < deadline and listing is None:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/api/contents",
                                             headers={"Authorization": f"token {token}"})
                with urllib.request.urlopen(req, timeout=5) as r:
                    listing = json.loads(r.read())
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                last = str(e)
                time.sleep(0.5)
        assert listing is not None, f"JupyterLab did not answer on port {port} within 90 s ({last})"
        names = sorted(c["name"] for c in listing["content"] if c["type"] == "notebook")
        assert names == ["01_data.ipynb", "02_attacks.ipynb", "03_retrieval.ipynb", "04_drift.ipynb",
                         "05_interpretability.ipynb", "06_captions.ipynb", "07_report.ipynb"]
        with urllib.request.urlopen(urllib.request.Request(  # the lab page itself is served
                f"http://127.0.0.1:{port}/lab?token={token}"), timeout=10) as r:
            assert r.status == 200 and b"JupyterLab" in r.read()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
