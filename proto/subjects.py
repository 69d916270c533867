"""NATS names used by snapdeploy, in one place.

Events are published by the relay to the JetStream stream ``EVENTS_STREAM`` on
``snapdeploy.events.<category>.<EventType>`` where ``category`` is the aggregate kind taken
from the stream id (``vm-…`` → ``vm``). An audit subscriber follows ``snapdeploy.events.>``.
"""

EVENTS_STREAM = "SNAPDEPLOY_EVENTS"
EVENTS_PREFIX = "snapdeploy.events"
ALL_EVENTS = f"{EVENTS_PREFIX}.>"

# Header carrying the event's global position in the store, so the relay can find where
# the JetStream stream ends after a crash.
POSITION_HEADER = "Snapdeploy-Position"


def category_of(stream_id: str) -> str:
    """The aggregate kind of a stream id: ``vm-1234`` → ``vm``."""
    return stream_id.split("-", 1)[0]


def event_subject(stream_id: str, event_type: str) -> str:
    """The subject an event of ``event_type`` on ``stream_id`` is published on."""
    return f"{EVENTS_PREFIX}.{category_of(stream_id)}.{event_type}"


def event_filter(category: str = "*", event_type: str = "*") -> str:
    """A subject filter for events of a category and type (``*`` matches any)."""
    return f"{EVENTS_PREFIX}.{category}.{event_type}"
