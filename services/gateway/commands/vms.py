"""Virtual machine commands."""

from __future__ import annotations

from typing import Any

from services.gateway import views
from services.gateway.api import Caller, Context, Params, command, listing


@command("listVirtualMachines")
async def list_virtual_machines(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    where, args = ["removed IS NULL"], list[object]()
    if not caller.is_admin:
        args.append(caller.account_id)
        where.append(f"account_id = ${len(args)}")
    for name, column in (("id", "id"),):
        value = params.uuid(name)
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}::uuid")
    for name, column in (("state", "state"), ("name", "name"), ("hostid", "host_id"),
                         ("zoneid", "zone_id")):
        text = params.text(name)
        if text is not None:
            args.append(text)
            where.append(f"lower({column}) = lower(${len(args)})")
    sql = f"SELECT *, count(*) OVER () AS total FROM vm_instances WHERE {' AND '.join(where)}" \
          " ORDER BY created, id"
    page = params.page()
    if page is not None:
        args.extend(page)
        sql += f" LIMIT ${len(args) - 1} OFFSET ${len(args)}"
    async with ctx.store.pool.acquire() as conn:
        rows = await conn.fetch(sql, *args)
    total = rows[0]["total"] if rows else 0
    return listing("virtualmachine", [views.vm(dict(r)) for r in rows], total)
