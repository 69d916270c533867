"""Wire contracts of snapdeploy: every message that crosses a process boundary."""

from proto import subjects
from proto.envelope import EventEnvelope, MalformedMessage, Metadata, decode_envelope, encode
from proto.events import EVENT_TYPES, AnyEvent, Event

__all__ = [
    "EVENT_TYPES",
    "AnyEvent",
    "Event",
    "EventEnvelope",
    "MalformedMessage",
    "Metadata",
    "decode_envelope",
    "encode",
    "subjects",
]
