"""Wire contracts: round trips, and clear rejection of what is not a snapdeploy message."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from proto import EVENT_TYPES, EventEnvelope, MalformedMessage, Metadata, decode_envelope, encode
from proto.events import VmDeployRequested, VmStarted


def test_envelope_round_trip() -> None:
    envelope = EventEnvelope(
        id="e1", stream_id="vm-1", version=3, position=42, type="VmStarted", schema=1,
        recorded_at=datetime(2026, 11, 28, tzinfo=UTC),
        metadata=Metadata(correlation_id="c", causation_id="e0", actor="cloner"),
        data=VmStarted(vm_id="1", host_id="h", hypervisor_ref="vm-7", task_ids=["t1"]),
    )
    assert decode_envelope(encode(envelope)) == envelope


@pytest.mark.parametrize("raw, reason", [
    (b"", "not a snapdeploy event envelope"),
    (b"[1, 2]", "Expected `object`"),
    (b'{"id": "x"}', "missing required field"),
    (b'{"id":"e","stream_id":"vm-1","version":1,"position":1,"type":"Nope","schema":1,'
     b'"recorded_at":"2026-11-28T00:00:00Z","metadata":{"correlation_id":"c"},'
     b'"data":{"type":"Nope"}}', "Invalid value 'Nope'"),
])
def test_malformed_envelopes_are_rejected_with_the_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        decode_envelope(raw)


def test_every_event_type_is_registered_by_its_tag() -> None:
    for name, cls in EVENT_TYPES.items():
        assert cls.__struct_config__.tag == name
    request = VmDeployRequested(
        vm_id="v", job_id="j", account_id="a", user_id="u", name="n", display_name="d",
        instance_name="i", zone_id="z", service_offering_id="s", cpu_number=1, cpu_speed=500,
        memory_mb=512, pool_id="p", network_ids=["n"],
    )
    assert msgspec.json.decode(msgspec.json.encode(request), type=VmDeployRequested) == request
