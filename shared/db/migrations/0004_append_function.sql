-- One round trip per append: lock, check the expected version, insert the batch with
-- consecutive versions, and wake followers, all inside the caller's transaction.
CREATE FUNCTION append_events(
    p_stream   text,
    p_expected integer,
    p_ids      uuid[],
    p_types    text[],
    p_schemas  smallint[],
    p_data     jsonb[],
    p_metadata jsonb[]
) RETURNS SETOF events
LANGUAGE plpgsql AS $$
DECLARE
    current_version integer;
    last_position   bigint;
BEGIN
    LOCK TABLE events IN EXCLUSIVE MODE;
    SELECT coalesce(max(version), 0) INTO current_version FROM events WHERE stream_id = p_stream;
    IF p_expected <> -1 AND current_version <> p_expected THEN
        RAISE EXCEPTION 'stream % is at version %, not %', p_stream, current_version, p_expected
            USING ERRCODE = 'SD409', DETAIL = current_version::text;
    END IF;
    RETURN QUERY
        INSERT INTO events (event_id, stream_id, version, type, schema, data, metadata)
        SELECT e.id, p_stream, current_version + e.n::integer, e.type, e.schema, e.data, e.meta
        FROM unnest(p_ids, p_types, p_schemas, p_data, p_metadata)
             WITH ORDINALITY AS e(id, type, schema, data, meta, n)
        ORDER BY e.n
        RETURNING *;
    SELECT max(position) INTO last_position FROM events
        WHERE stream_id = p_stream AND version > current_version;
    PERFORM pg_notify('snapdeploy_events', last_position::text);
END;
$$;
