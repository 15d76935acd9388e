"""The service when its database goes away and comes back, and when it is told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from perks.app import create_app
from tests.pg_proxy import PgProxy
from tests.support import Api


async def test_database_outage_gives_503_then_recovers(aiohttp_client, config, clock, db, database_url):
    proxy = PgProxy(database_url)
    await proxy.start()
    client = await aiohttp_client(create_app(dataclasses.replace(config, database_url=proxy.url), clock=clock))
    api = Api(client, db)
    admin = await api.staff("admin")
    assert (await api.call("GET", "/readyz"))[0] == 200

    await proxy.stop()
    status, body = await api.call("GET", "/readyz")
    assert status == 503
    assert body["error"]["code"] == "database_unavailable"
    status, body = await api.call("POST", "/api/v1/staff", admin, json={"username": "x1", "password": "long enough pw", "role": "auditor"})
    assert status == 503
    assert body["error"]["code"] == "database_unavailable"
    assert "Traceback" not in str(body)

    await proxy.start()
    assert (await api.call("GET", "/readyz"))[0] == 200
    status, _ = await api.call("POST", "/api/v1/staff", admin, json={"username": "x1", "password": "long enough pw", "role": "auditor"})
    assert status == 201
    await proxy.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


def _wait_until_serving(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"perks serve exited early with {process.returncode}")
        try:
            if _get(url)[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("perks serve did not start in time")


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_runs_workers_on_one_port_and_stops_on_sigterm(database_url, tmp_path, workers):
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PERKS_SECRET": "a-test-secret-of-enough-length",
        "PERKS_DATA_DIR": str(tmp_path),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "perks", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_until_serving(f"http://127.0.0.1:{port}/readyz", process)
        for _ in range(20):
            assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output = process.stdout.read().decode() if process.stdout else ""
        if process.stdout:
            process.stdout.close()
    assert "Traceback" not in output, output


def _serve(database_url: str, tmp_path, *extra: str, secret: str = "a-test-secret-of-enough-length",
           ) -> tuple[subprocess.Popen, int, "os.PathLike[str]"]:
    """``perks serve`` in its own process group (``secret``: to accept the sessions of a test's own app)."""
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "PERKS_SECRET": secret, "PERKS_DATA_DIR": str(tmp_path)}
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "perks", "serve", "--port", str(port), *extra],
            env=env, cwd=tmp_path, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return process, port, log_path


def _worker_pids(log_path) -> list[int]:
    """The pids of the workers that have started serving, in order."""
    import re

    return [int(pid) for pid in re.findall(r"INFO (\d+) perks \[-\] =+ Running on", log_path.read_text())]


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command's parenthesised name: state, parent, process group, ...
    ([] if gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    return [child for child in _pids() if _stat(child)[1:2] == [str(pid)]]


def _running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    return _stat(pid)[:1] not in ([], ["Z"])


def _group_left_after(group: int, seconds: float) -> list[str]:
    """The command lines of the processes still running in process group ``group`` after up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        left = [pid for pid in _pids() if _stat(pid)[2:3] == [str(group)] and _running(pid)]
        if not left or time.monotonic() > deadline:
            return [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200] for pid in left]
        time.sleep(0.1)


def _stop(process: subprocess.Popen) -> None:
    """Kill whatever is left of the service's process group (a finalizer: nothing is left running)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_a_killed_worker_is_replaced_while_the_other_serves(database_url, tmp_path):
    process, port, log_path = _serve(database_url, tmp_path, "--workers", "2")
    try:
        _wait_until_serving(f"http://127.0.0.1:{port}/readyz", process)
        deadline = time.monotonic() + 30
        while len(_worker_pids(log_path)) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        victim = _worker_pids(log_path)[0]
        renderers = _children(victim)  # its QR renderers, started with it
        assert renderers
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        # The other worker keeps answering meanwhile (a connection queued on the dead one's socket waits for it).
        for _ in range(10):
            assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        while len(_worker_pids(log_path)) < 3:
            assert time.monotonic() - killed_at < 10, log_path.read_text()
            time.sleep(0.05)
        assert _worker_pids(log_path)[2] not in (victim, *_worker_pids(log_path)[:2])
        assert "died with signal SIGKILL" in log_path.read_text()
        # Its renderers went with it, though they ignore the SIGTERM of a stopping service.
        while [pid for pid in renderers if _running(pid)]:
            assert time.monotonic() - killed_at < 10, [pid for pid in renderers if _running(pid)]
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0
    finally:
        _stop(process)


def test_workers_that_keep_crashing_at_start_make_serve_give_up_non_zero(database_url, tmp_path):
    process, _, log_path = _serve(database_url, tmp_path, "--workers", "2", "--certfile", str(tmp_path / "missing.pem"))
    try:
        assert process.wait(timeout=120) == 1
    finally:
        _stop(process)
    output = log_path.read_text()
    assert "giving up" in output and output.count("retrying in") >= 4, output


async def test_images_in_flight_are_answered_when_the_whole_process_group_is_told_to_stop(api, config, tmp_path):
    """A service manager (systemd, a container runtime) sends SIGTERM to every process of the service at once: the
    QR renderers included. The images being asked for as it stops are still drawn, never a 500, and no process of
    the service outlives it."""
    _, token, perk = await api.entitled_client()
    voucher = await api.voucher(token, perk["code"])
    process, port, log_path = _serve(config.database_url, tmp_path, "--workers", "1", secret=config.secret)
    statuses: list[int] = []
    stopping = asyncio.Event()

    async def fetch_until_refused(session: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        url = f"http://127.0.0.1:{port}{voucher['qr_svg_url']}"
        while True:
            try:
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    statuses.append(response.status)
            except aiohttp.ClientError:  # the listener is closed: the service is going away
                if stopping.is_set():
                    return
                await asyncio.sleep(0.05)

    try:
        await asyncio.to_thread(_wait_until_serving, f"http://127.0.0.1:{port}/readyz", process)
        async with aiohttp.ClientSession() as session:
            fetchers = [asyncio.create_task(fetch_until_refused(session)) for _ in range(16)]
            while len(statuses) < 200:
                await asyncio.sleep(0.01)
            stopping.set()
            os.killpg(process.pid, signal.SIGTERM)
            async with asyncio.timeout(30):
                await asyncio.gather(*fetchers)
        assert await asyncio.to_thread(process.wait, 30) == 0
        left = await asyncio.to_thread(_group_left_after, process.pid, 10)
    finally:
        _stop(process)
    output = log_path.read_text()
    assert left == [], left
    assert set(statuses) == {200}, (sorted(set(statuses)), output[-3000:])
    assert "Traceback" not in output, output[-3000:]
