"""``ReadModels``: the queries of the read-model tables, answered as typed views."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import asyncpg
import msgspec

from proto import streams
from proto.events import dvs_binding
from shared.domain.job import CREATE_VM_SNAPSHOT_CMD, VM_COMMANDS, VOLUME_COMMANDS, JobStatus
from shared.eventstore import EventStore, RecordedEvent
from shared.projections._runner import CHECKPOINT, fold
from shared.projections._table import Projection, Row
from shared.projections.catalog import Catalog
from shared.projections.jobs import AsyncJobs
from shared.projections.read._progress import Progress
from shared.projections.read._views import (
    Account,
    AuditEvent,
    DiskOffering,
    Host,
    Job,
    JobWithResult,
    Network,
    Nic,
    Page,
    Paging,
    Pool,
    ServiceOffering,
    SnapshotDisk,
    Template,
    User,
    Viewer,
    Vm,
    VmSnapshot,
    Volume,
    Zone,
)
from shared.projections.vms import VmInstances

T = TypeVar("T")
_decode = msgspec.json.decode


# Rows to views ----------------------------------------------------------------------------


def _data(row: Row) -> dict[str, Any]:
    data: dict[str, Any] = _decode(row["data"])
    return data


def _nics(row: Row) -> list[Nic]:
    """A VM's NICs, each with the address its network gave it: the n-th NIC on a network
    holds the n-th address of that network's allocation."""
    held = _decode(row["addresses"]) if row.get("addresses") else {}
    seen: dict[str, int] = {}
    out = []
    for n in _decode(row["nics"]):
        index = seen[n["network_id"]] = seen.get(n["network_id"], -1) + 1
        got = held.get(n["network_id"]) or {}
        addresses = got.get("addresses") or []
        address = addresses[index] if index < len(addresses) else None
        out.append(Nic(id=n["nic_id"], network_id=n["network_id"], mac=n["mac"],
                       ip_address=address, cidr=got.get("cidr") if address else None,
                       gateway=got.get("gateway") if address else None))
    return out


def _vm(row: Row) -> Vm:
    return Vm(
        id=str(row["id"]), account_id=row["account_id"], user_id=row["user_id"],
        name=row["name"], display_name=row["display_name"], instance_name=row["instance_name"],
        zone_id=row["zone_id"], service_offering_id=row["service_offering_id"],
        template_id=row["template_id"], vm_snapshot_id=row["vm_snapshot_id"],
        host_id=row["host_id"], pool_id=row["pool_id"], cpu_number=row["cpu_number"],
        cpu_speed=row["cpu_speed"], memory_mb=row["memory_mb"], state=row["state"],
        error_text=row["error_text"], current_snapshot_id=row["current_snapshot_id"],
        imported=row["imported"], created=row["created"],
        nics=_nics(row), zone_kind=row.get("zone_kind"))


def _zone(row: Row) -> Zone:
    return Zone(id=row["id"], name=row["name"], created=row["created"],
                zone_kind=_data(row).get("driver_kind"))


def _host(row: Row) -> Host:
    d = _data(row)
    return Host(id=row["id"], name=row["name"], zone_id=row["zone_id"], state=row["state"],
                cluster=d["cluster"], cpu_cores=d["cpu_cores"], cpu_mhz=d["cpu_mhz"],
                memory_bytes=d["memory_bytes"], reserved_cpu_mhz=d.get("reserved_cpu_mhz", 0),
                reserved_memory_mb=d.get("reserved_memory_mb", 0), pool_ids=d["pool_ids"],
                created=row["created"], zone_kind=row.get("zone_kind"))


def _pool(row: Row) -> Pool:
    d = _data(row)
    return Pool(id=row["id"], name=row["name"], zone_id=row["zone_id"], state=row["state"],
                url=d["url"], capacity_bytes=d["capacity_bytes"], free_bytes=d["free_bytes"],
                host_ids=d["host_ids"],
                settings={k: str(v) for k, v in d.get("settings", {}).items()},
                created=row["created"], zone_kind=row.get("zone_kind"))


def _network(row: Row) -> Network:
    d = _data(row)
    return Network(id=row["id"], name=row["name"], zone_id=row["zone_id"], state=row["state"],
                   ref=d["ref"], binding=_binding(d), created=row["created"],
                   zone_kind=row.get("zone_kind"), cidr=d.get("cidr"), gateway=d.get("gateway"))


def _binding(d: dict[str, Any]) -> str | None:
    """A network row's binding; a row projected before bindings were there holds vSphere's
    switch and port group instead."""
    if "binding" in d:
        return cast(str | None, d["binding"])
    switch_uuid, portgroup_key = d.get("switch_uuid"), d.get("portgroup_key")
    return dvs_binding(switch_uuid, portgroup_key) if switch_uuid and portgroup_key else None


def _service_offering(row: Row) -> ServiceOffering:
    d = _data(row)
    return ServiceOffering(id=row["id"], name=row["name"], display_text=d["display_text"],
                           cpu_number=d["cpu_number"], cpu_speed=d["cpu_speed"],
                           memory_mb=d["memory_mb"], created=row["created"])


def _disk_offering(row: Row) -> DiskOffering:
    d = _data(row)
    return DiskOffering(id=row["id"], name=row["name"], display_text=d["display_text"],
                        disk_size_gb=d["disk_size_gb"], created=row["created"])


def _template(row: Row, owner: str | None, zone_id: str | None,
              zone_kind: str | None = None) -> Template:
    d = _data(row)
    return Template(id=row["id"], name=row["name"], account_id=owner, zone_id=zone_id,
                    vm_snapshot_id=d["vm_snapshot_id"], pool_id=d["pool_id"],
                    install_path=d["install_path"], created=row["created"],
                    zone_kind=zone_kind)


def _vm_snapshot(row: Row, current: bool) -> VmSnapshot:
    d = _data(row)
    return VmSnapshot(
        id=row["id"], name=row["name"], account_id=row["account_id"], vm_id=d["vm_id"],
        description=d["description"], parent_id=d["parent_id"], memory=d["memory"],
        state=row["state"], cpu_number=d["cpu_number"], memory_mb=d["memory_mb"],
        disks=[SnapshotDisk(volume_id=k["volume_id"], path=k["path"], pool_id=k["pool_id"],
                            size_bytes=k["size_bytes"], root=k["root"]) for k in d["disks"]],
        network_ids=[n["network_id"] for n in d["nics"]], current=current,
        created=row["created"])


def _volume(row: Row) -> Volume:
    d = _data(row)
    return Volume(id=row["id"], name=row["name"], account_id=row["account_id"],
                  zone_id=row["zone_id"], volume_type=d["volume_type"],
                  size_bytes=d["size_bytes"], pool_id=d.get("pool_id"), path=d.get("path"),
                  vm_id=d.get("vm_id"), template_id=d.get("template_id"),
                  disk_offering_id=d.get("disk_offering_id"), state=row["state"],
                  created=row["created"])


def _user(row: Row) -> User:
    d = _data(row)
    return User(id=row["id"], name=row["name"], account_id=row["account_id"],
                email=d["email"], firstname=d["firstname"], lastname=d["lastname"],
                state=row["state"], created=row["created"])


def _account(row: Row, users: list[User]) -> Account:
    d = _data(row)
    return Account(id=row["id"], name=row["name"], state=row["state"], role=d["role"],
                   limits=d.get("limits", {}), users=users, created=row["created"])


def _job(row: Row) -> Job:
    return Job(id=str(row["id"]), account_id=row["account_id"], user_id=row["user_id"],
               cmd=row["cmd"], instance_type=row["instance_type"],
               instance_id=str(row["instance_id"]), status=JobStatus(row["status"]),
               result_code=row["result_code"], error_code=row["error_code"],
               error_text=row["error_text"], created=row["created"], completed=row["completed"])


# Queries ----------------------------------------------------------------------------------


class _Where:
    """A WHERE clause built condition by condition, with its numbered arguments."""

    def __init__(self, *conditions: str) -> None:
        self.conditions = list(conditions)
        self.args: list[object] = []

    def arg(self, value: object) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, condition: Callable[[str], str], value: object) -> None:
        """Add ``condition(placeholder)`` when ``value`` is given (a text that PostgreSQL
        cannot hold, with a NUL, matches nothing)."""
        if isinstance(value, str) and "\x00" in value:
            self.conditions.append("false")
        elif value is not None:
            self.conditions.append(condition(self.arg(value)))

    def owned(self, viewer: Viewer, column: str) -> None:
        """Only the rows ``viewer`` may see by their owner in ``column`` (every row for an
        administrator; a row with no owner for none but them)."""
        if not viewer.is_admin:
            self.conditions.append(f"{column} = {self.arg(viewer.account_id)}")

    def among(self, column: str, ids: Sequence[str], *, as_uuid: bool = False) -> None:
        """Only the rows whose ``column`` is one of ``ids`` (no condition when none are
        given; an id that is not a UUID, where UUIDs are compared, names nothing)."""
        if ids:
            wanted = [_uuid(i) for i in ids] if as_uuid else [i for i in ids if _storable(i)]
            self.conditions.append(f"{column} = ANY({self.arg(wanted)})")

    def sql(self) -> str:
        return " AND ".join(self.conditions) or "true"


def _storable(*values: str) -> bool:
    """Whether PostgreSQL text can hold every one of ``values`` (not a NUL): an id or a name
    it cannot hold names nothing."""
    return not any("\x00" in v for v in values)


def _uuid(value: str | None) -> uuid.UUID | None:
    """A uuid filter; one that is not a UUID matches nothing (the nil UUID names nothing)."""
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return uuid.UUID(int=0)


async def _paged(conn: asyncpg.Connection, select: str, where: _Where, order: str,
                 paging: Paging | None) -> tuple[list[asyncpg.Record], int]:
    """The rows of ``select`` (with ``*``-style columns) matching ``where``, in ``order``,
    sliced by ``paging``; and how many match in all."""
    sql = f"{select} WHERE {where.sql()}"
    if paging is None:
        rows = await conn.fetch(f"{sql} ORDER BY {order}", *where.args)
        return rows, len(rows)
    rows = await conn.fetch(
        f"SELECT *, count(*) OVER () AS total FROM ({sql}) AS matching ORDER BY {order}"
        f" LIMIT {int(paging.limit)} OFFSET {int(paging.offset)}", *where.args)
    if rows:
        return rows, int(rows[0]["total"])
    total = await conn.fetchval(f"SELECT count(*) FROM ({sql}) AS matching", *where.args)
    return [], int(total)


def _named(where: _Where, name: str | None, keyword: str | None, *columns: str) -> None:
    """``name`` equal to the first column, ``keyword`` within any, case-insensitively."""
    where.add(lambda p: f"lower({columns[0]}) = lower({p})", name)
    where.add(lambda p: "(" + " OR ".join(f"strpos(lower({c}), lower({p})) > 0"
                                          for c in columns) + ")", keyword)


_CATALOG_ORDER = "name, id"
# The driver kind recorded with the zone of a row aliased ``o`` (joined as ``z``).
_ZONE_KIND = "z.data ->> 'driver_kind' AS zone_kind"
_ZONE_OF = " LEFT JOIN catalog z ON z.kind = 'zone' AND z.id = {}.zone_id"
# Zones, hosts, pools and networks, each with its zone's driver kind.
_IN_ZONES = (f"SELECT * FROM (SELECT o.*, {_ZONE_KIND} FROM catalog o{_ZONE_OF.format('o')})"
             " AS in_zones")
# A host's per-VM reservation map is left in the table: the totals beside it are shown.
_HOSTS = ("SELECT * FROM (SELECT o.kind, o.id, o.zone_id, o.account_id, o.name, o.state,"
          f" o.data - 'reservations' AS data, o.version, o.created, o.removed, {_ZONE_KIND}"
          f" FROM catalog o{_ZONE_OF.format('o')}) AS hosts")
# A template with its owner (its VM snapshot's, deleted snapshots included), its pool's zone
# and that zone's driver kind.
_TEMPLATES = (
    "SELECT * FROM (SELECT t.id, t.name, t.data, t.created, s.account_id AS owner,"
    f" p.zone_id AS pool_zone_id, {_ZONE_KIND} FROM catalog t"
    " LEFT JOIN catalog s ON s.kind = 'vmsnapshot' AND s.id = t.data ->> 'vm_snapshot_id'"
    " LEFT JOIN catalog p ON p.kind = 'pool' AND p.id = t.data ->> 'pool_id'"
    " AND p.removed IS NULL"
    f"{_ZONE_OF.format('p')}"
    " WHERE t.kind = 'template' AND t.removed IS NULL) AS templates")
# Volumes, each in its own zone or else its pool's (a volume made on a pool records none).
_VOLUMES = (
    "SELECT * FROM (SELECT v.kind, v.id, COALESCE(v.zone_id, p.zone_id) AS zone_id,"
    " v.account_id, v.name, v.state, v.data, v.version, v.created, v.removed FROM catalog v"
    " LEFT JOIN catalog p ON p.kind = 'pool' AND p.id = v.data ->> 'pool_id'"
    " WHERE v.kind = 'volume') AS volumes")
# VMs with their zone's driver kind.
_VMS = (f"SELECT * FROM (SELECT v.*, {_ZONE_KIND} FROM vm_instances v{_ZONE_OF.format('v')})"
        " AS vms")
# A UUID's text, as PostgreSQL casts it to uuid (checked first: a cast of anything else fails).
_UUID_RE = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# The names of objects and VMs by their ids (text; the VMs' as UUIDs, so looked up by
# their key: their ids as text would be compared with every VM's).
_NAMES = ("SELECT id, name FROM catalog WHERE id = ANY($1) AND kind IN ('zone', 'host',"
          " 'serviceoffering', 'diskoffering', 'template', 'network', 'account', 'vmsnapshot',"
          " 'pool')"
          " UNION ALL SELECT id::text, name FROM vm_instances WHERE id = ANY($2::uuid[])")
_SNAPSHOTS = (
    "SELECT * FROM (SELECT s.*, v.current_snapshot_id = s.id AS is_current FROM catalog s"
    # By the VM's key: its id as text would be compared with every VM's.
    f" LEFT JOIN vm_instances v ON v.id = CASE WHEN s.data ->> 'vm_id' ~* '{_UUID_RE}'"
    " THEN (s.data ->> 'vm_id')::uuid END"
    " WHERE s.kind = 'vmsnapshot' AND s.removed IS NULL) AS snapshots")


def _template_row(row: Row) -> Template:
    return _template(row, row["owner"], row["pool_zone_id"], row["zone_kind"])


_JOBS = AsyncJobs()
_VM_INSTANCES = VmInstances()
_CATALOG = Catalog()


def _fold(projection: Projection, records: Sequence[RecordedEvent]) -> dict[Any, Row]:
    rows, _ = fold(projection, {}, [(r, r.event()) for r in records])
    return rows


def template_from_stream(records: Sequence[RecordedEvent], template_id: str,
                         owner: str | None, zone_id: str | None,
                         zone_kind: str | None = None) -> Template | None:
    """Template ``template_id`` as the events of its seed's stream (``streams.seed``) have
    made it so far, folded as the catalog projection folds them; None until it is seeded.
    Its owner, zone and zone's driver kind are the caller's to give (its VM snapshot's
    owner, its pool's zone and that zone's kind)."""
    row = _fold(_CATALOG, records).get(("template", template_id))
    return None if row is None else _template(row, owner, zone_id, zone_kind)


class ReadModels:
    """Queries of the projections, for one event store's read models."""

    def __init__(self, store: EventStore, progress: Progress | None = None) -> None:
        """``progress``: the projector's checkpoint as this process follows it, to wait on
        without polling (``reach``)."""
        self._store = store
        self._pool = store.pool
        self._progress = progress
        self._zone_kinds: dict[str, str] = {}

    # Progress of the read models ------------------------------------------------------------

    async def position(self) -> int:
        """The global position of the last event the projector has applied."""
        reached = await self._fetchval("SELECT position FROM checkpoints WHERE name = $1",
                                       CHECKPOINT)
        return int(reached or 0)

    async def reach(self, position: int, within: float = 5.0) -> bool:
        """Wait (at most ``within`` seconds) until the projector has applied the event at
        ``position``; whether it did. Woken by ``Progress`` while it listens; else the
        checkpoint is re-read every 10 ms."""
        if self._progress is not None and self._progress.live:
            return await self._progress.reach(position, within)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            if await self.position() >= position:
                return True
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.01)

    # Virtual machines -----------------------------------------------------------------------

    async def vms(self, viewer: Viewer, *, vm_id: str | None = None,
                  account_id: str | None = None, state: str | None = None,
                  name: str | None = None, host_id: str | None = None,
                  zone_id: str | None = None, keyword: str | None = None,
                  ids: Sequence[str] = (), paging: Paging | None = None) -> Page[Vm]:
        """The VMs ``viewer`` sees that match every filter given (``state``, ``name``,
        ``host_id`` and ``zone_id`` case-insensitively; ``keyword`` within the name or
        display name; ``ids``: one of them), oldest first; expunged VMs are gone."""
        where = _Where("removed IS NULL")
        where.owned(viewer, "account_id")
        where.add(lambda p: f"id = {p}", _uuid(vm_id))
        where.among("id", ids, as_uuid=True)
        where.add(lambda p: f"account_id = {p}", account_id)
        where.add(lambda p: f"lower(state) = lower({p})", state)
        where.add(lambda p: f"lower(host_id) = lower({p})", host_id)
        where.add(lambda p: f"lower(zone_id) = lower({p})", zone_id)
        _named(where, name, keyword, "name", "display_name")
        async with self._pool.acquire() as conn:
            rows, total = await _paged(conn, _VMS, where, "created, id", paging)
        items = [_vm(dict(r)) for r in rows]
        return Page([vm for vm in items if viewer.sees(vm.account_id)], total)

    async def vm(self, viewer: Viewer, vm_id: str) -> Vm | None:
        """One VM, if ``viewer`` sees it and it is not expunged."""
        page = await self.vms(viewer, vm_id=vm_id)
        return page.items[0] if page.items else None

    async def vm_parts(self, vm_id: str) -> tuple[list[str], list[str]]:
        """The ids of a VM's volumes (not deleted) and of its VM snapshots (deleted ones
        too: a template seeded from one stays its owner's), each sorted."""
        if not _storable(vm_id):
            return [], []
        async with self._pool.acquire() as conn:
            volumes = await conn.fetch(
                "SELECT id FROM catalog WHERE kind = 'volume' AND removed IS NULL"
                " AND data ->> 'vm_id' = $1 ORDER BY id", vm_id)
            snapshots = await conn.fetch(
                "SELECT id FROM catalog WHERE kind = 'vmsnapshot' AND data ->> 'vm_id' = $1"
                " ORDER BY id", vm_id)
        return [r["id"] for r in volumes], [r["id"] for r in snapshots]

    # VM snapshots ---------------------------------------------------------------------------

    async def vm_snapshots(self, viewer: Viewer, *, snapshot_id: str | None = None,
                           vm_id: str | None = None, name: str | None = None,
                           keyword: str | None = None, ids: Sequence[str] = (),
                           state: str | None = None,
                           paging: Paging | None = None) -> Page[VmSnapshot]:
        """The VM snapshots ``viewer`` sees (not deleted), by name; ``state`` in any
        case; ``keyword`` within the name or description."""
        where = _Where()
        where.owned(viewer, "account_id")
        where.add(lambda p: f"id = {p}", snapshot_id)
        where.among("id", ids)
        where.add(lambda p: f"data ->> 'vm_id' = {p}", vm_id)
        where.add(lambda p: f"lower(state) = lower({p})", state)
        _named(where, name, keyword, "name", "data ->> 'description'")
        async with self._pool.acquire() as conn:
            rows, total = await _paged(conn, _SNAPSHOTS, where, _CATALOG_ORDER, paging)
        items = [_vm_snapshot(dict(r), bool(r["is_current"])) for r in rows]
        return Page([s for s in items if viewer.sees(s.account_id)], total)

    async def vm_snapshot(self, viewer: Viewer, snapshot_id: str) -> VmSnapshot | None:
        page = await self.vm_snapshots(viewer, snapshot_id=snapshot_id)
        return page.items[0] if page.items else None

    async def vm_snapshot_count(self, vm_id: str) -> int:
        """How many VM snapshots (not deleted) a VM has."""
        if not _storable(vm_id):
            return 0
        count = await self._fetchval(
            "SELECT count(*) FROM catalog WHERE kind = 'vmsnapshot' AND removed IS NULL"
            " AND data ->> 'vm_id' = $1", vm_id)
        return int(count)

    # Templates ------------------------------------------------------------------------------

    async def templates(self, viewer: Viewer, *, template_id: str | None = None,
                        zone_id: str | None = None, name: str | None = None,
                        keyword: str | None = None, ids: Sequence[str] = (),
                        owner_id: str | None = None,
                        paging: Paging | None = None) -> Page[Template]:
        """The seeded templates ``viewer`` sees (by their VM snapshot's owner, whether or
        not that snapshot is deleted since), by name; ``zone_id`` is their pool's zone;
        ``owner_id``: only that account's."""
        where = _Where()
        where.owned(viewer, "owner")
        where.add(lambda p: f"owner = {p}", owner_id)
        where.add(lambda p: f"id = {p}", template_id)
        where.among("id", ids)
        where.add(lambda p: f"pool_zone_id = {p}", zone_id)
        _named(where, name, keyword, "name")
        async with self._pool.acquire() as conn:
            rows, total = await _paged(conn, _TEMPLATES, where, _CATALOG_ORDER, paging)
        items = [_template_row(dict(r)) for r in rows]
        return Page([t for t in items if viewer.sees(t.account_id)], total)

    async def template(self, viewer: Viewer, template_id: str) -> Template | None:
        page = await self.templates(viewer, template_id=template_id)
        return page.items[0] if page.items else None

    # Volumes --------------------------------------------------------------------------------

    async def volumes(self, viewer: Viewer, *, volume_id: str | None = None,
                      vm_id: str | None = None, volume_type: str | None = None,
                      zone_id: str | None = None, name: str | None = None,
                      keyword: str | None = None, ids: Sequence[str] = (),
                      paging: Paging | None = None) -> Page[Volume]:
        """The volumes ``viewer`` sees (not deleted), by name; ``volume_type`` is ROOT or
        DATADISK."""
        where = _Where("kind = 'volume'", "removed IS NULL")
        where.owned(viewer, "account_id")
        where.add(lambda p: f"id = {p}", volume_id)
        where.among("id", ids)
        where.add(lambda p: f"data ->> 'vm_id' = {p}", vm_id)
        where.add(lambda p: f"data ->> 'volume_type' = upper({p})", volume_type)
        where.add(lambda p: f"zone_id = {p}", zone_id)
        _named(where, name, keyword, "name")
        async with self._pool.acquire() as conn:
            rows, total = await _paged(conn, _VOLUMES, where, _CATALOG_ORDER, paging)
        items = [_volume(dict(r)) for r in rows]
        return Page([v for v in items if viewer.sees(v.account_id)], total)

    async def volume(self, viewer: Viewer, volume_id: str) -> Volume | None:
        page = await self.volumes(viewer, volume_id=volume_id)
        return page.items[0] if page.items else None

    # What the cloud is made of: visible to every account ------------------------------------

    async def _catalog(self, kind: str, convert: Callable[[Row], T], *, obj_id: str | None,
                       zone_id: str | None, name: str | None, keyword: str | None,
                       paging: Paging | None, select: str = "SELECT * FROM catalog",
                       ids: Sequence[str] = ()) -> Page[T]:
        where = _Where("removed IS NULL")
        where.add(lambda p: f"kind = {p}", kind)
        where.add(lambda p: f"id = {p}", obj_id)
        where.among("id", ids)
        where.add(lambda p: f"zone_id = {p}", zone_id)
        _named(where, name, keyword, "name")
        async with self._pool.acquire() as conn:
            rows, total = await _paged(conn, select, where, _CATALOG_ORDER, paging)
        return Page([convert(dict(r)) for r in rows], total)

    async def zones(self, *, zone_id: str | None = None, name: str | None = None,
                    keyword: str | None = None, ids: Sequence[str] = (),
                    paging: Paging | None = None) -> Page[Zone]:
        return await self._catalog("zone", _zone, obj_id=zone_id, zone_id=None, name=name,
                                   keyword=keyword, paging=paging, ids=ids)

    async def zone_kind(self, zone_id: str | None) -> str | None:
        """The driver kind recorded with zone ``zone_id`` (None: none recorded, a vCenter
        datacenter; or no such zone). A zone's kind never changes: each one found is kept."""
        if zone_id is None or not _storable(zone_id):
            return None
        if zone_id not in self._zone_kinds:
            kind = await self._fetchval(
                "SELECT coalesce(data ->> 'driver_kind', '') FROM catalog"
                " WHERE kind = 'zone' AND id = $1", zone_id)
            if kind is None:
                return None  # no such zone (yet)
            self._zone_kinds[zone_id] = kind
        return self._zone_kinds[zone_id] or None

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        """One value of one query, on a connection of the pool for just that."""
        async with self._pool.acquire() as conn:
            return await conn.fetchval(sql, *args)

    async def hosts(self, *, host_id: str | None = None, zone_id: str | None = None,
                    name: str | None = None, keyword: str | None = None,
                    paging: Paging | None = None) -> Page[Host]:
        return await self._catalog("host", _host, obj_id=host_id, zone_id=zone_id, name=name,
                                   keyword=keyword, paging=paging, select=_HOSTS)

    async def pools(self, *, pool_id: str | None = None, zone_id: str | None = None,
                    name: str | None = None, keyword: str | None = None,
                    paging: Paging | None = None) -> Page[Pool]:
        return await self._catalog("pool", _pool, obj_id=pool_id, zone_id=zone_id, name=name,
                                   keyword=keyword, paging=paging, select=_IN_ZONES)

    async def pool(self, pool_id: str) -> Pool | None:
        page = await self.pools(pool_id=pool_id)
        return page.items[0] if page.items else None

    async def networks(self, *, network_id: str | None = None, zone_id: str | None = None,
                       name: str | None = None, keyword: str | None = None,
                       paging: Paging | None = None) -> Page[Network]:
        return await self._catalog("network", _network, obj_id=network_id, zone_id=zone_id,
                                   name=name, keyword=keyword, paging=paging,
                                   select=_IN_ZONES)

    async def service_offerings(self, *, offering_id: str | None = None,
                                name: str | None = None, keyword: str | None = None,
                                paging: Paging | None = None) -> Page[ServiceOffering]:
        return await self._catalog("serviceoffering", _service_offering, obj_id=offering_id,
                                   zone_id=None, name=name, keyword=keyword, paging=paging)

    async def service_offering(self, offering_id: str) -> ServiceOffering | None:
        page = await self.service_offerings(offering_id=offering_id)
        return page.items[0] if page.items else None

    async def disk_offerings(self, *, offering_id: str | None = None, name: str | None = None,
                             keyword: str | None = None,
                             paging: Paging | None = None) -> Page[DiskOffering]:
        return await self._catalog("diskoffering", _disk_offering, obj_id=offering_id,
                                   zone_id=None, name=name, keyword=keyword, paging=paging)

    async def disk_offering(self, offering_id: str) -> DiskOffering | None:
        page = await self.disk_offerings(offering_id=offering_id)
        return page.items[0] if page.items else None

    async def names(self, ids: Iterable[str | None]) -> dict[str, str]:
        """The names of the objects ``ids`` name (zones, hosts, offerings, templates,
        networks, accounts, VM snapshots, VMs), for responses that show a name beside an id;
        an id of nothing known is left out."""
        wanted = sorted({i for i in ids if i and _storable(i)})
        if not wanted:
            return {}
        vms = [vm_id for vm_id in map(_uuid, wanted) if vm_id is not None and vm_id.int]
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_NAMES, wanted, vms)
        return {r["id"]: r["name"] for r in rows}

    # Accounts and users ---------------------------------------------------------------------

    async def accounts(self, viewer: Viewer, *, account_id: str | None = None,
                       name: str | None = None) -> list[Account]:
        """The accounts ``viewer`` sees (an administrator: all; anyone else: their own),
        each with its users; ``name`` case-insensitively; by name."""
        return (await self.accounts_page(viewer, account_id=account_id, name=name)).items

    async def accounts_page(self, viewer: Viewer, *, account_id: str | None = None,
                            name: str | None = None, keyword: str | None = None,
                            paging: Paging | None = None) -> Page[Account]:
        """``accounts``, with ``keyword`` within the name, filtered before ``paging``; the
        page's total is every match."""
        where = _Where("kind = 'account'", "removed IS NULL")
        where.owned(viewer, "id")
        where.add(lambda p: f"id = {p}", account_id)
        _named(where, name, keyword, "name")
        async with self._pool.acquire() as conn:
            rows, total = await _paged(conn, "SELECT * FROM catalog", where, _CATALOG_ORDER,
                                       paging)
            users = await conn.fetch(
                "SELECT * FROM catalog WHERE kind = 'user' AND removed IS NULL"
                f" AND account_id = ANY($1) ORDER BY {_CATALOG_ORDER}", [r["id"] for r in rows])
        by_account: dict[str, list[User]] = {}
        for row in users:
            user = _user(dict(row))
            by_account.setdefault(user.account_id, []).append(user)
        return Page([_account(dict(r), by_account.get(r["id"], [])) for r in rows
                     if viewer.sees(r["id"])], total)

    async def account(self, viewer: Viewer, account_id: str) -> Account | None:
        found = await self.accounts(viewer, account_id=account_id)
        return found[0] if found else None

    async def user(self, viewer: Viewer, user_id: str) -> User | None:
        """A user of an account ``viewer`` sees."""
        if not _storable(user_id):
            return None
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM catalog WHERE kind = 'user' AND id = $1 AND removed IS NULL",
                user_id)
        if row is None or not viewer.sees(row["account_id"]):
            return None
        return _user(dict(row))

    async def name_taken(self, account_name: str, username: str) -> bool:
        """Whether a new account ``account_name`` with its first user ``username`` would
        share a name (case-insensitively) with a live account or user, or the user's name
        with any user there ever was."""
        if not _storable(account_name, username):
            return False
        taken = await self._fetchval(
            "SELECT 1 FROM catalog WHERE (kind IN ('account', 'user')"
            " AND lower(name) = lower($1) AND removed IS NULL)"
            " OR (kind = 'user' AND lower(name) = lower($2)) LIMIT 1",
            account_name, username)
        return taken is not None

    # Jobs -----------------------------------------------------------------------------------

    async def jobs(self, viewer: Viewer, *, paging: Paging | None = None) -> Page[Job]:
        """The jobs ``viewer`` sees (those started by its account), newest first."""
        where = _Where()
        where.owned(viewer, "account_id")
        async with self._pool.acquire() as conn:
            rows, total = await _paged(conn, "SELECT * FROM async_jobs", where,
                                       "created DESC, id", paging)
        items = [_job(dict(r)) for r in rows]
        return Page([j for j in items if viewer.sees(j.account_id)], total)

    async def job(self, viewer: Viewer, job_id: str) -> JobWithResult | None:
        """A job folded straight from the store, so a job id the gateway has returned is
        visible at once whatever the projector's lag; None if ``viewer`` does not see it."""
        if not _storable(job_id):
            return None
        records = await self._store.read_job_stream(job_id)
        if not records:
            return None
        row = _fold(_JOBS, records).get((_uuid(job_id),))
        if row is None or not viewer.sees(row["account_id"]):
            return None
        job = _job(row)
        result = await self._job_result(job, records) if job.status == JobStatus.SUCCEEDED \
            else None
        return JobWithResult(job=job, result=result, position=records[-1].position)

    async def _job_result(self, job: Job,
                          records: list[RecordedEvent]) -> Vm | Volume | VmSnapshot | None:
        if job.cmd in VM_COMMANDS:
            vm = next(iter(_fold(_VM_INSTANCES, records).values()), None)
            if vm is None:
                return None
            # Its addresses are on its networks' streams, allocated when it was placed.
            addresses, zone_kind = await asyncio.gather(
                self._fetchval("SELECT addresses FROM vm_instances WHERE id = $1", vm["id"]),
                self.zone_kind(vm["zone_id"]))
            return _vm({**vm, "zone_kind": zone_kind,
                        "addresses": addresses or vm.get("addresses")})
        if job.cmd in VOLUME_COMMANDS:
            volume_id = records[0].stream_id.removeprefix("volume-")
            row = _fold(_CATALOG, records).get(("volume", volume_id))
            return None if row is None else _volume(row)
        if job.cmd == CREATE_VM_SNAPSHOT_CMD:
            rows = _fold(_CATALOG, await self._store.read_stream(
                streams.vm_snapshot(job.instance_id)))
            row = rows.get(("vmsnapshot", job.instance_id))
            return None if row is None else _vm_snapshot(row, current=True)
        return None

    # The audit trail ------------------------------------------------------------------------

    async def audit_events(self, viewer: Viewer, types: Sequence[str], *,
                           event_id: str | None = None, keyword: str | None = None,
                           keyword_types: Sequence[str] = (), parent_types: Sequence[str] = (),
                           paging: Paging | None = None) -> Page[AuditEvent]:
        """The recorded events of ``types`` that ``viewer`` sees (its account's; an
        administrator: all), newest first, every filter applied before the page; the total
        counts every match. ``keyword``: within the event's type or its data, or one of
        ``keyword_types`` (the types whose name as shown holds it).

        Each event comes with who started the work it belongs to (``origin_actor``: the
        actor of the request that began its correlation, e.g. the user whose deploy a
        service carried on) and its ``parent_id``: the first event of ``parent_types`` that
        request appended, when that is not the event itself."""
        where = _Where()
        where.add(lambda p: f"type = ANY({p})", list(types))
        where.owned(viewer, "metadata ->> 'account_id'")
        where.add(lambda p: f"event_id = {p}", _uuid(event_id))
        if keyword is not None:
            if not _storable(keyword):
                where.conditions.append("false")
            else:
                text = where.arg(keyword)
                shown = where.arg(list(keyword_types))
                where.conditions.append(
                    f"(type = ANY({shown}) OR strpos(lower(type), lower({text})) > 0"
                    f" OR strpos(lower(data::text), lower({text})) > 0)")
        parents = where.arg(list(parent_types))
        limit = "" if paging is None else \
            f" LIMIT {int(paging.limit)} OFFSET {int(paging.offset)}"
        # The page first, then who began each event's work and its parent (indexed by
        # correlation, migration 0012): a request appends with its id as both correlation
        # and causation; a service's events carry the correlation on.
        sql = (
            "SELECT e.*, origin.metadata ->> 'actor' AS origin_actor,"
            " parent.event_id AS parent_id FROM ("
            "SELECT position, event_id, type, data, metadata, recorded_at FROM events"
            f" WHERE {where.sql()} ORDER BY position DESC{limit}) AS e"
            " LEFT JOIN LATERAL (SELECT r.metadata FROM events r"
            " WHERE r.metadata ->> 'correlation_id' = e.metadata ->> 'correlation_id'"
            " AND r.metadata ->> 'causation_id' = r.metadata ->> 'correlation_id'"
            " ORDER BY r.position LIMIT 1) AS origin ON true"
            " LEFT JOIN LATERAL (SELECT r.event_id FROM events r"
            " WHERE r.metadata ->> 'correlation_id' = e.metadata ->> 'correlation_id'"
            " AND r.metadata ->> 'causation_id' = r.metadata ->> 'correlation_id'"
            f" AND r.type = ANY({parents}) AND r.position < e.position"
            " AND r.metadata ->> 'account_id' IS NOT DISTINCT FROM"
            " e.metadata ->> 'account_id'"
            " ORDER BY r.position LIMIT 1) AS parent ON true"
            " ORDER BY e.position DESC")
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(sql, *where.args)
            if paging is None:
                total = len(rows)
            elif rows and len(rows) < paging.limit:
                total = paging.offset + len(rows)
            else:
                args = where.args[:-1]  # the parents' types are not part of the count
                total = int(await conn.fetchval(
                    f"SELECT count(*) FROM events WHERE {where.sql()}", *args))
        out = []
        for row in rows:
            meta = _decode(row["metadata"])
            if viewer.sees(meta.get("account_id")):
                out.append(AuditEvent(
                    id=str(row["event_id"]), position=row["position"], type=row["type"],
                    data=_decode(row["data"]), actor=meta.get("actor"),
                    origin_actor=row["origin_actor"], account_id=meta.get("account_id"),
                    causation_id=meta.get("causation_id"),
                    correlation_id=meta.get("correlation_id"),
                    parent_id=None if row["parent_id"] is None else str(row["parent_id"]),
                    recorded_at=row["recorded_at"]))
        return Page(out, total)
