"""Prometheus metrics shared by every service (each process exports its own)."""

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_HANDLED = Counter(
    "snapdeploy_messages_handled_total",
    "Messages a consumer handled (or recognised as already handled)",
    ["consumer", "type", "outcome"],
)
HANDLER_FAILURES = Counter(
    "snapdeploy_handler_failures_total",
    "Handler runs that raised and were handed back for redelivery",
    ["consumer", "type"],
)
MALFORMED_MESSAGES = Counter(
    "snapdeploy_malformed_messages_total",
    "Messages rejected because they are not valid snapdeploy messages",
    ["consumer"],
)
HANDLE_SECONDS = Histogram(
    "snapdeploy_handle_seconds",
    "Time from receiving a message to acknowledging it",
    ["consumer", "type"],
)
RELAYED_EVENTS = Counter(
    "snapdeploy_relayed_events_total", "Events published to JetStream by the relay"
)
PUBLISHED_AT_ONCE = Counter(
    "snapdeploy_published_at_once_total",
    "Events sent to the JetStream stream by the process that committed them, as it did",
)
CHECKPOINT = Gauge(
    "snapdeploy_checkpoint_position", "Global position a tailing process has reached", ["name"]
)
PROJECTED_EVENTS = Counter(
    "snapdeploy_projected_events_total", "Events applied to the read models"
)
HTTP_REQUESTS = Counter(
    "snapdeploy_http_requests_total", "API requests by command and error code", ["command", "code"]
)
HTTP_SECONDS = Histogram(
    "snapdeploy_http_request_seconds", "API request latency by command", ["command"]
)
