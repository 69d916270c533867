-- Passwords and login sessions (the CloudStack `login` command and the web console).
-- Kept out of the event store, as API keys are: events travel on NATS and the audit
-- stream, and neither a password's hash nor a session's key may travel there.

-- One row per user with a password: its salted hash (shared.passwords' format, a KDF's
-- output, never the password) and the owner columns a login answers with.
CREATE TABLE user_passwords (
    user_id       text        PRIMARY KEY,
    user_name     text        NOT NULL UNIQUE,
    account_id    text        NOT NULL,
    account_name  text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('admin', 'user')),
    password_hash text        NOT NULL,
    updated       timestamptz NOT NULL DEFAULT now()
);

-- A logged-in session: found by the SHA-256 of its JSESSIONID cookie, and used only with
-- the matching `sessionkey` (also kept as its SHA-256). It ends at logout, after
-- `idle_s` without a request, or at `expires` whatever happens.
CREATE TABLE sessions (
    id_hash      bytea       PRIMARY KEY,
    key_hash     bytea       NOT NULL,
    user_id      text        NOT NULL,
    account_id   text        NOT NULL,
    account_name text        NOT NULL,
    user_name    text        NOT NULL,
    role         text        NOT NULL CHECK (role IN ('admin', 'user')),
    created      timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    expires      timestamptz NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires);
