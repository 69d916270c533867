-- Secret keys are kept sealed (AES-GCM under the gateway's key encryption key, which never
-- enters the database) in secret_sealed; secret_key holds a secret in clear only for rows
-- written before this migration, until the gateway seals them on its next start.
-- A user's key pairs are revoked when the user registers a new pair: a revoked row keeps
-- its api key (so the key can never be registered or configured again) and no secret.
ALTER TABLE api_keys ALTER COLUMN secret_key DROP NOT NULL;
ALTER TABLE api_keys ADD COLUMN secret_sealed bytea;
ALTER TABLE api_keys ADD COLUMN revoked timestamptz;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_one_secret CHECK (
    CASE WHEN revoked IS NULL THEN (secret_key IS NULL) <> (secret_sealed IS NULL)
         ELSE secret_key IS NULL AND secret_sealed IS NULL END);
CREATE INDEX api_keys_live_by_user ON api_keys (user_id) WHERE revoked IS NULL;
