"""gateway: the CloudStack-compatible HTTP API, and the audit event stream over HTTP."""
