-- API keys and their secrets. Kept out of the event store on purpose: events are
-- published on NATS and the audit stream, and a secret must never travel there.
CREATE TABLE api_keys (
    api_key      text        PRIMARY KEY,
    secret_key   text        NOT NULL,
    account_id   text        NOT NULL,
    account_name text        NOT NULL,
    user_id      text        NOT NULL,
    user_name    text        NOT NULL,
    role         text        NOT NULL CHECK (role IN ('admin', 'user')),
    created      timestamptz NOT NULL DEFAULT now()
);
