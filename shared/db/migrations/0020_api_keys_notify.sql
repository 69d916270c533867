-- Each change of an api_keys row (a key revoked, replaced, or its row deleted) is announced
-- on 'snapdeploy_api_keys' (the api key) when its transaction commits, and a TRUNCATE as ''
-- (every key): a gateway that keeps the keys it has read (shared.apikeys.LiveKeys) forgets
-- them then, so a revoked key stops working at once.
CREATE FUNCTION notify_api_key_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        PERFORM pg_notify('snapdeploy_api_keys', OLD.api_key);
    ELSE
        PERFORM pg_notify('snapdeploy_api_keys', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_changed
    AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION notify_api_key_changed();

CREATE TRIGGER api_keys_truncated
    AFTER TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION notify_api_key_changed();
