"""Test configuration: no network in any test, offline hub libraries, and the real photos in ../shared/data."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

# Hub libraries must never try the network in tests: vlmkit's offline mode + the HF switches.
os.environ.setdefault("VLMKIT_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLMKIT_DEVICE", "cpu")
# one content-keyed cache (decoded images, text embeddings) per test session, never the user's
os.environ.setdefault("VLMKIT_CACHE", tempfile.mkdtemp(prefix="vlmkit-test-cache-"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
_LOCAL = ("127.0.0.1", "::1", "localhost")


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    """Fail any outgoing connection (tests must run offline); loopback and unix sockets stay allowed
    so that Jupyter kernels (nbval, papermill) can talk to their own process."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0] if isinstance(address, tuple) else address
            if host not in _LOCAL:
                raise RuntimeError(f"network disabled in tests (tried to connect to {address!r})")
        return real_connect(self, address, *args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", guarded)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (real COCO / ImageNet / SCAM photos), or skip the test."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found beside the checkout: {SHARED_DATA} (real-photo tests need it)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny models on one thread: on the 2 shared cores, torch's 2-thread OpenMP regions
    stall badly while other processes run (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
