"""listEvents: the audit trail in CloudStack's event shape.

Which stored events are shown, as which of CloudStack's types and levels, is
``shared.domain.audit``; every filter (``type``, ``level``, ``id``, ``keyword``) narrows the
query in the read API before the page is cut, and ``count`` is every match. ``username`` is
the user whose request began the work (a service carrying a deploy on acts for its user);
``parentid`` is the first shown event that request appended, when there is one.
"""

from __future__ import annotations

from typing import Any

from services.gateway.api import (
    PAGING,
    Caller,
    Context,
    Field,
    Param,
    Params,
    Shape,
    command,
    cs_time,
    listing,
)
from services.gateway.views import DOMAIN
from shared.domain import audit
from shared.errors import PARAM_ERROR, ApiError
from shared.projections.read import AuditEvent, Paging

DEFAULT_PAGE = 500


def _f(name: str, type_: str, description: str) -> Field:
    return Field(name, type_, description)


EVENT = Shape("event", "an audit event", (
    _f("id", "string", "the event's UUID"),
    _f("type", "string", "CloudStack's event type (VM.CREATE, VM.STOP, VOLUME.ATTACH, ...)"),
    _f("level", "string", "INFO or ERROR"),
    _f("state", "string", "Completed"),
    _f("description", "string", "what happened, naming what it happened to"),
    _f("username", "string", "the user whose request began the work (system: none did)"),
    _f("account", "string", "the name of the account it happened in"),
    _f("accountid", "string", "the UUID of the account it happened in"),
    _f("domainid", "string", "the UUID of the account's domain"),
    _f("domain", "string", "the name of the account's domain"),
    _f("created", "date", "when it was recorded"),
    _f("parentid", "string", "the event of the request that began the work (itself listed)"),
))


def render(event: AuditEvent, names: dict[str, str]) -> dict[str, Any]:
    """One event as CloudStack's EventResponse shows it."""
    cs_type, level = audit.SHOWN[event.type]
    out: dict[str, Any] = {
        "id": event.id, "type": cs_type, "level": level, "state": "Completed",
        "description": audit.describe(event.type, event.data),
        "username": audit.username(event.origin_actor or event.actor),
        "account": names.get(event.account_id or "", "system"),
        "accountid": event.account_id, **DOMAIN, "created": cs_time(event.recorded_at),
    }
    if event.parent_id is not None and event.parent_id != event.id:
        out["parentid"] = event.parent_id
    return {k: v for k, v in out.items() if v is not None}


@command("listEvents", description="Lists the audit events of the caller's account (every "
         f"account's for an admin), newest first, {DEFAULT_PAGE} at most unless paged.",
         response=EVENT, params=(
             Param("id", "uuid", "only the event with this ID", entity=EVENT),
             Param("type", "string", "only events of this CloudStack type (VM.CREATE, ...)"),
             Param("level", "string", "only events of this level: INFO or ERROR"),
             Param("keyword", "string", "only events whose type or description holds this"),
             Param("listall", "boolean", "accepted: an admin lists every account's"),
             *PAGING,
         ))
async def list_events(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    event_id = params.uuid("id")
    wanted, level = params.text("type"), params.text("level")
    keyword = params.text("keyword")
    params.boolean("listall")
    if level is not None and level.upper() not in audit.LEVELS:
        raise ApiError(PARAM_ERROR, f"invalid parameter level: {level[:64]!r} is not "
                       f"{' or '.join(audit.LEVELS)}")
    paging = params.page() or Paging(limit=DEFAULT_PAGE)
    found = await ctx.read.audit_events(
        caller.viewer, audit.stored_types(wanted, level), event_id=event_id, keyword=keyword,
        keyword_types=audit.types_matching(keyword) if keyword else (),
        parent_types=list(audit.SHOWN), paging=paging)
    names = await ctx.read.names(e.account_id for e in found.items)
    return listing("event", [render(e, names) for e in found.items], found.total)
