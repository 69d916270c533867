"""The record of a stored event as it travels on NATS, and how it is encoded."""

from __future__ import annotations

from datetime import datetime

import msgspec

from proto.events import AnyEvent


class Metadata(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Who caused an event and in answer to what.

    ``correlation_id`` is shared by every event of one request; ``causation_id`` is the id
    of the event or request that directly led to this one; ``actor`` names the user
    (``account/user``) or the service that acted; ``account_id`` is the account on whose
    behalf the work is done, carried from a request to every event that follows from it.
    """

    correlation_id: str
    causation_id: str | None = None
    actor: str = "system"
    account_id: str | None = None


class EventEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """One committed event: its identity, place in the store, and payload."""

    id: str
    stream_id: str
    version: int
    position: int
    type: str
    schema: int
    recorded_at: datetime
    metadata: Metadata
    data: AnyEvent


class MalformedMessage(ValueError):
    """A message that is not a valid snapdeploy message; never retried."""


_decoder = msgspec.json.Decoder(EventEnvelope)
_encoder = msgspec.json.Encoder()


def encode(msg: msgspec.Struct) -> bytes:
    return _encoder.encode(msg)


def decode_envelope(raw: bytes) -> EventEnvelope:
    """Decode an event envelope, raising ``MalformedMessage`` with the reason."""
    try:
        envelope = _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedMessage(f"not a snapdeploy event envelope: {str(exc)[:200]}") from exc
    if envelope.type != type(envelope.data).__name__:
        raise MalformedMessage(f"event envelope of type {envelope.type[:64]!r} carries a "
                               f"{type(envelope.data).__name__} payload")
    return envelope
