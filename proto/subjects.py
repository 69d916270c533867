"""NATS names used by snapdeploy, in one place.

Events are published by the relay to the JetStream stream ``EVENTS_STREAM`` on
``snapdeploy.events.<category>.<EventType>`` where ``category`` is the aggregate kind taken
from the stream id (``vm-…`` → ``vm``); only the relay may publish there.

The relay also publishes each event, without JetStream, on
``snapdeploy.audit.<account id>.<EventType>``: a client's NATS identity may subscribe to its
own account's audit subjects only (an admin's to all). Events on no account's behalf go to
``snapdeploy.audit.system.<EventType>``.

Requests to the gateway go to ``snapdeploy.api.<command>`` (see ``proto.commands``).
"""

EVENTS_STREAM = "SNAPDEPLOY_EVENTS"
EVENTS_PREFIX = "snapdeploy.events"
ALL_EVENTS = f"{EVENTS_PREFIX}.>"
AUDIT_PREFIX = "snapdeploy.audit"
API_PREFIX = "snapdeploy.api"
SYSTEM_AUDIT = "system"

# Header carrying the event's global position in the store, for readers of the stream. The
# relay never trusts it: it resumes from the store (see shared.relay).
POSITION_HEADER = "Snapdeploy-Position"
# Header naming the service that published an event itself, as soon as it committed it
# (``shared.relay.Herald``); the relay publishes every event again, in position order, and
# JetStream keeps whichever came first. Events reach the stream out of position order.
DIRECT_HEADER = "Snapdeploy-Published-By"


def category_of(stream_id: str) -> str:
    """The aggregate kind of a stream id: ``vm-1234`` → ``vm``."""
    return stream_id.split("-", 1)[0]


def event_subject(stream_id: str, event_type: str) -> str:
    """The subject an event of ``event_type`` on ``stream_id`` is published on."""
    return f"{EVENTS_PREFIX}.{category_of(stream_id)}.{event_type}"


def event_filter(category: str = "*", event_type: str = "*") -> str:
    """A subject filter for events of a category and type (``*`` matches any)."""
    return f"{EVENTS_PREFIX}.{category}.{event_type}"


def audit_token(account_id: str | None) -> str:
    """The subject token of an account's audit events (account ids are UUIDs)."""
    if not account_id or not all(c.isalnum() or c in "-_" for c in account_id):
        return SYSTEM_AUDIT
    return account_id


def audit_subject(account_id: str | None, event_type: str) -> str:
    """The core-NATS subject an event of ``account_id`` is announced on."""
    return f"{AUDIT_PREFIX}.{audit_token(account_id)}.{event_type}"
