"""Shared fixtures: a real ``herald serve`` per test module and loopback receivers."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import HeraldServer, Receiver  # noqa: E402

# Where Airflow is installed, importing herald.airflow imports Airflow, which writes its
# config to AIRFLOW_HOME (default ~/airflow): keep that out of the developer's home.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="herald-pytest-airflow-"))

# Values that destinations in the tests reference as ${env:...} (resolved by Herald at send time).
SERVER_ENV = {"HERALD_SECRET_RISE_TOKEN": "rise-secret-token"}


@pytest.fixture(scope="module")
def herald_server() -> Iterator[HeraldServer]:
    """A fresh Herald (own data dir, own port) for each test module."""
    server = HeraldServer(extra_env=SERVER_ENV).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def send_token(herald_server: HeraldServer) -> str:
    return herald_server.token(["send"], name="pytest-send")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def slack() -> Iterator[Receiver]:
    """A Slack incoming-webhook fake: 200 with the plain-text body ``ok``."""
    r = Receiver(status=200, reply=b"ok", content_type="text/plain; charset=utf-8")
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(autouse=True)
def _no_herald_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests pass URLs and tokens explicitly; the developer's HERALD_* must not leak in."""
    for name in list(os.environ):
        if name.startswith("HERALD_") and name not in ("HERALD_BIN", "HERALD_TEST_LOG"):
            monkeypatch.delenv(name, raising=False)
