"""The process that ``perks serve --workers N`` runs: it owns the listening sockets, keeps N workers alive, and stops
them all on SIGTERM or SIGINT.

Each worker serves on a socket of its own, bound here with SO_REUSEPORT to one port (the kernel spreads connections
across them). The supervisor keeps every socket open, so when a worker dies the connections the kernel queued on its
socket wait for the replacement instead of being reset. A worker that dies once serving is replaced at once; one that
keeps dying before it serves (a bad certificate, say) is retried with a growing delay, then the supervisor gives up and
exits non-zero.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any, Callable

log = logging.getLogger("perks.supervisor")

BACKLOG = 1024
# Consecutive failed starts of one worker after which the supervisor gives up.
MAX_FAILED_STARTS = 5
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 8.0
# Longer than the workers' own graceful shutdown (requests in flight get 20 s): then they are killed.
STOP_TIMEOUT_SECONDS = 30.0
# Exit codes of a worker that stopped because it was told to.
_CLEAN_EXITS = {0, -signal.SIGTERM, -signal.SIGINT}
_PR_SET_PDEATHSIG = 1


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets listening on one address with SO_REUSEPORT (port 0: the first one's port for all)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(BACKLOG)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask Linux to send this process ``signum`` when its parent dies (a killed supervisor leaves no orphan)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)
    except (OSError, AttributeError):  # not Linux: the supervisor's own stop still reaches the workers
        pass


@dataclass
class _Slot:
    number: int
    sock: socket.socket
    process: BaseProcess | None = None
    started_at: float = 0.0
    ready: Any = None  # a multiprocessing Event the worker sets once its application has started
    failed_starts: int = 0
    restart_at: float | None = None
    restarts: int = field(default=0)


class Supervisor:
    """Runs ``target(sock, ready, *args)`` in one spawned process per socket and keeps them running; the target
    calls ``ready.set()`` once it serves (a worker that exits before that has failed to start)."""

    def __init__(self, target: Callable[..., None], sockets: list[socket.socket], args: tuple[Any, ...] = ()) -> None:
        self._target = target
        self._args = args
        self._context = multiprocessing.get_context("spawn")
        self._slots = [_Slot(number, sock) for number, sock in enumerate(sockets)]
        self._stopping = False
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)

    def run(self) -> int:
        """Serve until told to stop (0 when every worker stopped cleanly) or until a worker cannot start (1)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in self._slots:
                self._start(slot)
            outcome = self._watch()
            return self._stop_all() if outcome == 0 else max(outcome, self._stop_all())
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stopping = True
        try:
            os.write(self._wake_write, b"x")
        except BlockingIOError:
            pass

    def _start(self, slot: _Slot) -> None:
        slot.ready = self._context.Event()
        process = self._context.Process(target=_worker_main, args=(self._target, slot.sock, slot.ready, *self._args),
                                        name=f"perks-worker-{slot.number}")
        process.start()
        slot.process, slot.started_at, slot.restart_at = process, time.monotonic(), None
        log.info("worker %d started (pid %s)", slot.number, process.pid)

    def _watch(self) -> int:
        """Wait for exits and signals; restart what died. 0 when asked to stop, 1 when giving up."""
        while not self._stopping:
            now = time.monotonic()
            due = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
            timeout = max(0.0, min(due) - now) if due else None
            sentinels = {slot.process.sentinel: slot for slot in self._slots
                         if slot.process is not None and slot.restart_at is None}
            ready = wait([*sentinels, self._wake_read], timeout)
            if self._wake_read in ready:
                os.read(self._wake_read, 64)
            for sentinel in ready:
                if sentinel in sentinels and not self._stopping:
                    if not self._on_exit(sentinels[sentinel]):
                        return 1
            now = time.monotonic()
            for slot in self._slots:
                if slot.restart_at is not None and slot.restart_at <= now and not self._stopping:
                    self._start(slot)
        return 0

    def _on_exit(self, slot: _Slot) -> bool:
        """Schedule the replacement of a worker that exited; False when it keeps failing to start."""
        assert slot.process is not None
        slot.process.join()
        code, pid = slot.process.exitcode, slot.process.pid
        _forget_metrics_of(pid)
        lived = time.monotonic() - slot.started_at
        if slot.ready.is_set():
            slot.failed_starts = 0
            slot.restart_at = time.monotonic()
            log.error("worker %d (pid %s) died with %s after %.0f s; replacing it", slot.number, pid,
                      _describe(code), lived)
        else:
            slot.failed_starts += 1
            if slot.failed_starts >= MAX_FAILED_STARTS:
                log.critical("worker %d failed to start %d times in a row (last: %s); giving up",
                             slot.number, slot.failed_starts, _describe(code))
                return False
            delay = min(FIRST_BACKOFF_SECONDS * 2 ** (slot.failed_starts - 1), MAX_BACKOFF_SECONDS)
            slot.restart_at = time.monotonic() + delay
            log.error("worker %d (pid %s) exited with %s %.1f s into its start; retrying in %.1f s",
                      slot.number, pid, _describe(code), lived, delay)
        slot.restarts += 1
        return True

    def _stop_all(self) -> int:
        """SIGTERM every worker, wait for their graceful stop, kill stragglers; 0 when all stopped cleanly."""
        alive = [slot.process for slot in self._slots if slot.process is not None and slot.process.exitcode is None]
        for process in alive:
            if process.pid:
                _signal_quietly(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None and process.pid:
                log.error("worker %s did not stop within %.0f s; killing it", process.pid, STOP_TIMEOUT_SECONDS)
                _signal_quietly(process.pid, signal.SIGKILL)
                process.join()
        for slot in self._slots:
            slot.sock.close()
        codes = [process.exitcode for process in alive]
        return 0 if all(code in _CLEAN_EXITS for code in codes) else 1


def _worker_main(target: Callable[..., None], sock: socket.socket, ready: Any, *args: Any) -> None:
    die_with_parent()
    target(sock, ready, *args)


def _signal_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _describe(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


def _forget_metrics_of(pid: int | None) -> None:
    # prometheus_client's multiprocess mode keeps a dead process's live gauges until told.
    if pid and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
