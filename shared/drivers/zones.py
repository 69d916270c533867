"""Every hypervisor session of a process, and which one owns each zone.

A deployment may have zones of several kinds at once: the datacenters of each vCenter
(a session per vCenter) and KVM zones, each a libvirt session of its own. ``Hypervisors``
holds every session; the services hand a zone's work to ``for_zone(zone_id)``, the session
whose inventory holds that zone. Zone ids are snapdeploy's
(``shared.domain.inventory.zone_id`` of the datacenter's ref, as the inventory sync records
them; a further vCenter's refs, and so its zone ids, are scoped by its name:
``vmware.VSphere``), learned from each session's
inventory: at every ``read()`` and again whenever a zone is asked for that no session was
known to own. A session that does not answer keeps the zones it held at its last answer.

A zone that no session owns once every session has answered is a ``HypervisorError`` that
is not transient (fault ``UnknownZone``): the configuration does not name the hypervisor
that holds it, and asking again changes nothing until the process is configured and
started again. While a session does not answer, its own (transient) error is raised
instead, since the zone may be that session's.

A hypervisor that does not answer when the process starts does not hold the others back:
its session is ``Pending`` (it holds no zone, and reads as a session that does not answer)
until it opens, when ``opened`` puts it in its place and tells whoever asked
(``when_opened``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from shared.domain.inventory import zone_id as zone_id_of
from shared.drivers.base import Connection, DriverKind, Hypervisor, HypervisorError, Inventory

log = logging.getLogger(__name__)

UNKNOWN_ZONE = "UnknownZone"
# While a session does not answer, how long a zone no answering one holds is refused with
# its error before the sessions are read again.
REREAD_S = 5.0


@dataclass(frozen=True, eq=False)
class Pending:
    """A session not opened yet: its hypervisor has not answered since the process
    started (``error``: why, at the last attempt)."""

    connection: Connection
    error: BaseException

    @property
    def kind(self) -> DriverKind:
        return self.connection.kind

    def refusal(self) -> HypervisorError:
        return HypervisorError(f"{describe(self)} has not answered since snapdeploy started "
                               f"({self.error})", transient=True)


Session = Hypervisor | Pending


@dataclass(frozen=True)
class Reading:
    """The sessions' inventories, read at once (``Hypervisors.read``): those of every
    session that answered; the sessions that did not, each with its error; the zones
    those held at their last answer, which this reading says nothing about; and whether a
    session that did not answer was never read (``unplaced``): then any zone the store
    knows that no answering session holds may be its."""

    inventories: list[tuple[DriverKind, Inventory]]
    unread: dict[Session, BaseException]
    unread_zones: set[str]
    unplaced: bool = False

    def whole(self) -> list[tuple[DriverKind, Inventory]]:
        """The inventories, if every session answered.

        Raises:
            HypervisorError: the first session that did not answer, with its error's text,
                transience and fault, caused by it (a new one each time: a reading may be
                asked again, by several callers at once).
        """
        if self.unread:
            error = next(iter(self.unread.values()))
            raise HypervisorError(str(error), transient=getattr(error, "transient", True),
                                  fault=getattr(error, "fault", None)) from error
        return self.inventories

    def unread_text(self) -> str:
        """Which sessions did not answer, and why ("" if every one did)."""
        return "; ".join(f"{describe(s)} did not answer ({e})" for s, e in self.unread.items())


class Hypervisors:
    """The sessions of a process (``Runtime.hypervisors()``), routed by zone."""

    def __init__(self, sessions: Sequence[Session]) -> None:
        if not sessions:
            raise ValueError("no hypervisor session")
        self.sessions = list(sessions)
        self._owners: dict[str, Hypervisor] = {}
        self._learning = asyncio.Lock()
        self._on_open: list[Callable[[], Awaitable[None]]] = []
        # The last reading that some session did not answer, and when: a zone not learned
        # from it is refused with its error until it is ``REREAD_S`` old, not read again
        # for every request in a zone of a hypervisor that is down.
        self._silent: tuple[float, Reading] | None = None

    def pending(self) -> list[Pending]:
        """The sessions not opened yet."""
        return [s for s in self.sessions if isinstance(s, Pending)]

    async def opened(self, pending: Pending, session: Hypervisor) -> None:
        """``pending`` is open now, as ``session``: its zones are learned at the next read,
        and each ``when_opened`` callback is run (its errors logged)."""
        self.sessions = [session if s is pending else s for s in self.sessions]
        self._silent = None
        for callback in self._on_open:
            try:
                await callback()
            except Exception:
                log.exception("after %s answered", describe(session))

    def when_opened(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` each time a pending session opens."""
        self._on_open.append(callback)

    # ---- reading every session -------------------------------------------------------

    async def inventories(self) -> list[tuple[DriverKind, Inventory]]:
        """Each session's inventories with the kind of the session, every session read at
        once; learns which session owns each zone. Raises the first error of a session
        that did not answer (so a caller never takes a zone it could not read for gone).

        Raises:
            HypervisorError: a session failed, or two sessions hold the same zone.
        """
        return (await self.read()).whole()

    async def read(self) -> Reading:
        """Every session's inventories, read at once, and the sessions that did not answer
        with the zones each held at its last answer, kept as theirs (a session never read,
        ``Pending`` or not, holds none that can be told: the reading is ``unplaced``).
        Learns which session owns each zone.

        Raises:
            HypervisorError: two sessions hold the same zone.
        """
        sessions = list(self.sessions)
        read = await asyncio.gather(*(_inventory(s) for s in sessions), return_exceptions=True)
        owners: dict[str, Hypervisor] = {}
        out: list[tuple[DriverKind, Inventory]] = []
        unread: dict[Session, BaseException] = {}
        unplaced = False
        for session, inventories in zip(sessions, read, strict=True):
            if isinstance(inventories, BaseException):
                if not isinstance(inventories, Exception):
                    raise inventories
                unplaced = unplaced or session not in self._owners.values()
                unread[session] = inventories
                continue
            assert not isinstance(session, Pending)
            for inventory in inventories:
                zone = zone_id_of(inventory.datacenter_ref)
                other = owners.get(zone)
                if other is not None and other is not session:
                    raise HypervisorError(
                        f"zone {inventory.datacenter_name} (datacenter {inventory.datacenter_ref})"
                        f" is held by two hypervisors, {describe(other)} and "
                        f"{describe(session)}: give one of them another name")
                owners[zone] = session
                out.append((session.kind, inventory))
        # A silent session keeps the zones it held, but those an answering one holds now.
        kept = {zone: session for zone, session in self._owners.items()
                if session in unread and zone not in owners}
        self._owners = {**owners, **kept}
        reading = Reading(out, unread, set(kept), unplaced)
        self._silent = (time.monotonic(), reading) if unread else None
        return reading

    async def inventory(self) -> list[Inventory]:
        """Every session's inventories, one per zone (see ``inventories``)."""
        return [inventory for _, inventory in await self.inventories()]

    # ---- one zone ----------------------------------------------------------------------

    async def for_zone(self, zone_id: str | None) -> Hypervisor:
        """The session that owns zone ``zone_id``.

        Raises:
            HypervisorError: no session owns it (not transient, fault ``UnknownZone``), or a
                session that might did not answer (its own error, transient).
        """
        if zone_id is not None:
            known = self._owners.get(zone_id)
            if known is not None:
                return known
            async with self._learning:
                known = self._owners.get(zone_id)  # learned meanwhile by another caller
                if known is None:
                    silent = self._silent
                    reading = silent[1] if silent is not None \
                        and time.monotonic() - silent[0] < REREAD_S \
                        else await self.read()  # the sessions that answer teach theirs
                    known = self._owners.get(zone_id)
                    if known is None:
                        reading.whole()  # a silent session may hold it: its error
            if known is not None:
                return known
        raise HypervisorError(
            f"zone {zone_id} is in no hypervisor snapdeploy is connected to "
            f"({', '.join(describe(s) for s in self.sessions)})" if zone_id is not None
            else "the zone is not known, so neither is its hypervisor",
            fault=UNKNOWN_ZONE)

    async def manager(self, zone_id: str | None) -> str:
        """What manages zone ``zone_id``'s hypervisors, as messages name it ("vCenter"):
        its session's kind's; when that cannot be told, the one kind every session has, or
        "the hypervisor". Never raises."""
        try:
            return (await self.for_zone(zone_id)).kind.manager
        except HypervisorError:
            managers = {s.kind.manager for s in self.sessions}
            return managers.pop() if len(managers) == 1 else "the hypervisor"

    def zones(self) -> dict[str, Hypervisor]:
        """The zones learned so far and their sessions."""
        return dict(self._owners)

    async def close(self) -> None:
        for session in self.sessions:
            if not isinstance(session, Pending):
                await session.close()


async def _inventory(session: Session) -> list[Inventory]:
    if isinstance(session, Pending):
        raise session.refusal()
    return await session.inventory()


def describe(session: Session) -> str:
    """A session as messages name it: its kind's manager, and its KVM zone or the name of
    its further vCenter (``vcenters``) if it has one."""
    name = session.connection.label if isinstance(session, Pending) else (
        getattr(session, "zone", None) or getattr(session, "scope", None))
    return f"{session.kind.manager} {name}" if isinstance(name, str) and name \
        else session.kind.manager


__all__ = ["UNKNOWN_ZONE", "Hypervisors", "Pending", "Reading", "Session", "describe"]
