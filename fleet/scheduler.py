"""Background jobs: lease expiry, command re-sends, telemetry retention.

Several service replicas may run; a lock row in ``scheduler_locks`` elects
one leader at a time (it must refresh the row before ``lock_ttl_s`` passes,
otherwise another replica takes over). Only the leader runs the jobs, so a
lease is expired and its ``revoke`` sent once.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import timedelta

from sqlalchemy import delete, insert, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from fleet import metrics
from fleet.db.models import SchedulerLock, TelemetrySample
from fleet.services.commands import CommandService
from fleet.services.common import Clock, utcnow
from fleet.services.leases import LeaseService

log = logging.getLogger(__name__)

LOCK_NAME = "scheduler"


class Scheduler:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        leases: LeaseService,
        commands: CommandService,
        *,
        interval_s: float = 1.0,
        lock_ttl_s: float = 15.0,
        telemetry_retention_hours: float = 24.0,
        prune_every_s: float = 60.0,
        resend_every_s: float = 5.0,
        clock: Clock = utcnow,
        instance_id: str | None = None,
    ):
        self._sf = session_factory
        self._leases = leases
        self._commands = commands
        self.interval_s = interval_s
        self.lock_ttl_s = lock_ttl_s
        self.retention = timedelta(hours=telemetry_retention_hours)
        self.prune_every_s = prune_every_s
        self.resend_every_s = resend_every_s
        self._clock = clock
        self.instance_id = instance_id or f"fleet-{uuid.uuid4().hex[:12]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0
        self._last_resend = 0.0
        self.is_leader = False

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fleet-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.is_leader:
            self._release_lock()

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            # Lag = how late this tick started against its plan (a busy
            # database or a starved process shows here first).
            metrics.SCHEDULER_TICK_LAG.set(max(0.0, time.monotonic() - next_tick))
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed")
            next_tick += self.interval_s
            if next_tick < time.monotonic():
                next_tick = time.monotonic()
            self._stop.wait(max(0.0, next_tick - time.monotonic()))

    # -- one round -------------------------------------------------------------------
    def tick(self) -> None:
        self.is_leader = self._acquire_lock()
        metrics.SCHEDULER_LEADER.set(1 if self.is_leader else 0)
        if not self.is_leader:
            return
        count, lateness = self._leases.expire_due()
        metrics.SCHEDULER_EXPIRY_LAG.set(lateness)
        if count:
            metrics.LEASES_EXPIRED.inc(count)
        mono = time.monotonic()
        if mono - self._last_resend >= self.resend_every_s:
            self._last_resend = mono
            self._commands.resend_failed()
        if mono - self._last_prune >= self.prune_every_s:
            self._last_prune = mono
            self.prune_telemetry()

    def prune_telemetry(self) -> int:
        cutoff = self._clock() - self.retention
        with self._sf.begin() as s:
            return (
                s.execute(delete(TelemetrySample).where(TelemetrySample.received_at < cutoff)).rowcount or 0
            )

    # -- leader election ------------------------------------------------------------------
    def _acquire_lock(self) -> bool:
        now = self._clock()
        until = now + timedelta(seconds=self.lock_ttl_s)
        with self._sf.begin() as s:
            res = s.execute(
                update(SchedulerLock)
                .where(
                    SchedulerLock.name == LOCK_NAME,
                    or_(SchedulerLock.holder == self.instance_id, SchedulerLock.expires_at < now),
                )
                .values(holder=self.instance_id, expires_at=until)
            )
            if res.rowcount:
                return True
        try:
            with self._sf.begin() as s:
                s.execute(
                    insert(SchedulerLock).values(name=LOCK_NAME, holder=self.instance_id, expires_at=until)
                )
            return True
        except IntegrityError:
            return False  # another replica holds a fresh lock

    def _release_lock(self) -> None:
        with self._sf.begin() as s:
            s.execute(
                delete(SchedulerLock).where(
                    SchedulerLock.name == LOCK_NAME, SchedulerLock.holder == self.instance_id
                )
            )
        self.is_leader = False
