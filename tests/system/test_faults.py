"""Faults under load: a worker killed, PostgreSQL restarted and crashed, while redemptions run at full speed.

Nothing acknowledged is lost, nothing is redeemed twice or beyond a limit, every idempotent retry gets the first
answer, requests in the gap get 503 database_unavailable (never a 500, never a hang) and the service comes back
by itself. ``scripts/faults`` runs the longer version and prints the figures.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.fault_support import REQUEST_BOUND_SECONDS, OwnPostgres, missing_postgres, run_faults

RECOVERY_BOUND_SECONDS = 5.0
# A replacement worker is a fresh Python process that imports the service and opens its pool and key ring.
WORKER_RESTART_BOUND_SECONDS = 10.0


@pytest.fixture
def own_postgres():
    """A PostgreSQL 15 cluster of this test's own, stopped whatever happens."""
    reason = missing_postgres()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the fault test needs its own PostgreSQL: {reason}")
        pytest.skip(f"the fault test needs its own PostgreSQL: {reason}")
    base = Path(tempfile.mkdtemp(prefix="perks-faults-"))
    base.chmod(0o755)  # the cluster's own user must reach its directory inside
    pg = OwnPostgres(base / "pg")
    pg.init()
    pg.start()
    try:
        yield pg, base
    finally:
        pg.stop()
        import shutil

        shutil.rmtree(base, ignore_errors=True)


async def test_nothing_lost_or_doubled_when_workers_and_the_database_fail_under_load(own_postgres):
    pg, base = own_postgres
    report = await run_faults(pg, base, clients=400, concurrency=24, yearly_capacity=600)
    print(report.summary())
    figures = report.figures

    assert figures.failures == [], figures.failures[:10]
    assert report.problems == [], report.problems[:10]
    assert figures.slowest < REQUEST_BOUND_SECONDS
    assert figures.statuses["201"] > 50, figures.summary()
    assert figures.statuses["503 database_unavailable"] > 0, "no request fell in a database gap"
    assert sum(report.gap_503s.values()) > 0, "/readyz never said 503 while the database was away"
    assert [s for s in report.worker_restart_seconds if s > WORKER_RESTART_BOUND_SECONDS] == []
    for name, seconds in report.recoveries.items():
        assert seconds is not None and seconds < RECOVERY_BOUND_SECONDS, (name, seconds)
