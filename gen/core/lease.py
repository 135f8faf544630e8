"""Leases: how a process proves it still holds a unit, and stops the moment it may not.

A claim gives the unit a new lease token and a lease in the database (`lease_until`); every write for the unit
carries the token (gen.store: fenced INSERT/UPDATE), so a worker whose lease passed and was taken over writes
nothing. The keeper renews the leases of the units this process runs every lease/3 seconds. Each lease also has a
deadline on this machine's clock (boot time, which keeps counting through SIGSTOP and a suspended VM): past it, no
new teacher call starts for the unit, so a worker that was frozen past its lease pays for nothing more when it wakes.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from gen.errors import LeaseLost
from gen.store import Store
from gen.store.threads import in_db_thread

log = logging.getLogger("gen.core")


def boot_clock() -> float:
    """Seconds on a clock that counts suspended time too (CLOCK_BOOTTIME on Linux)."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(clock) if clock is not None else time.monotonic()


def safety_margin(lease_seconds: float) -> float:
    return min(max(lease_seconds * 0.25, 0.5), 10.0)


@dataclass
class Lease:
    unit_id: int
    token: int
    deadline: float  # on boot_clock(): past it, this process no longer counts on holding the unit
    lost: bool = False

    def check(self) -> None:
        if self.lost or boot_clock() > self.deadline:
            self.lost = True
            raise LeaseLost(f"unit {self.unit_id}: its lease passed before this worker could renew it")


class LeaseKeeper:
    """The leases this process holds, renewed together every lease/3 seconds by `run()`."""

    def __init__(self, store: Store, worker: str, lease_seconds: float):
        self.store = store
        self.worker = worker
        self.lease_seconds = lease_seconds
        self._held: dict[int, Lease] = {}

    def take(self, unit_id: int, token: int, claimed_at: float) -> Lease:
        lease = Lease(unit_id, token, claimed_at + self.lease_seconds - safety_margin(self.lease_seconds))
        self._held[unit_id] = lease
        return lease

    def drop(self, lease: Lease) -> None:
        if self._held.get(lease.unit_id) is lease:
            del self._held[lease.unit_id]

    @property
    def held(self) -> list[Lease]:
        return list(self._held.values())

    async def renew_now(self) -> None:
        leases = self.held
        if not leases:
            return
        started = boot_clock()
        renewed = await in_db_thread(self.store.renew_leases, [(lease.unit_id, lease.token) for lease in leases],
                                     worker=self.worker, lease_seconds=self.lease_seconds)
        for lease in leases:
            if lease.unit_id in renewed:
                lease.deadline = started + self.lease_seconds - safety_margin(self.lease_seconds)
            elif not lease.lost:
                lease.lost = True
                log.warning("unit %s: lease taken over by another worker; stopping it here", lease.unit_id)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self.renew_now()
            except Exception as exc:  # the database is away: leases run down; units stop at their deadline
                log.warning("could not renew %d leases (%s)", len(self._held), type(exc).__name__)
