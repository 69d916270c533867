"""relay: publishes committed events from the event store to JetStream."""
