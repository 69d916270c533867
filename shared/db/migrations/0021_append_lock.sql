-- Appends are serialised by a transaction-scoped advisory lock (1634758244, "apnd" in
-- ASCII, 0), held from before a stream's version is checked until the commit, instead of
-- LOCK TABLE events IN EXCLUSIVE MODE. Both make an append's positions visible only after
-- every lower one is (what readers by position rely on), but the table lock also conflicts
-- with VACUUM and ANALYZE: an append that met autovacuum at work on events waited
-- deadlock_timeout (a second by default) before PostgreSQL cancelled it, every append
-- behind it too, and one that met an anti-wraparound vacuum (never cancelled) waited for
-- the whole vacuum. The advisory lock conflicts with nothing but another append.
CREATE OR REPLACE FUNCTION append_events(
    p_stream   text,
    p_expected integer,
    p_ids      uuid[],
    p_types    text[],
    p_schemas  smallint[],
    p_data     jsonb[],
    p_metadata jsonb[]
) RETURNS SETOF events
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    current_version integer;
    last_position   bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(1634758244, 0);  -- "apnd": see the top of this file
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

CREATE OR REPLACE FUNCTION commit_events(
    p_consumers text[],
    p_causes    uuid[],
    p_groups    integer[],
    p_streams   text[],
    p_expected  integer[],
    p_counts    integer[],
    p_ids       uuid[],
    p_types     text[],
    p_schemas   smallint[],
    p_data      jsonb[],
    p_metadata  jsonb[]
) RETURNS TABLE (grp integer, last_position bigint, state text, message text, detail text,
                 constraint_name text, stream text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    n_groups  integer := coalesce(array_length(p_consumers, 1), 0);
    n_batches integer := coalesce(array_length(p_groups, 1), 0);
    b         integer := 1;  -- the next batch
    e         integer := 1;  -- its first event
    g         integer;
    upto      integer;
    stream_version integer;
    appended  bigint;
    newest    bigint;
    v_stream  text;
BEGIN
    FOR g IN 1..n_groups LOOP
        newest := 0;
        v_stream := NULL;
        BEGIN
            IF p_consumers[g] IS NOT NULL THEN
                INSERT INTO inbox (consumer, event_id) VALUES (p_consumers[g], p_causes[g])
                    ON CONFLICT DO NOTHING;
                IF NOT FOUND THEN
                    WHILE b <= n_batches AND p_groups[b] = g LOOP
                        e := e + p_counts[b];
                        b := b + 1;
                    END LOOP;
                    RETURN QUERY SELECT g, NULL::bigint, 'duplicate'::text, NULL::text,
                                        NULL::text, NULL::text, NULL::text;
                    CONTINUE;
                END IF;
            END IF;
            WHILE b <= n_batches AND p_groups[b] = g LOOP
                v_stream := p_streams[b];
                IF p_counts[b] = 0 THEN
                    -- A batch of no events only checks its stream's version, under the
                    -- lock appends take (so no append slips in before this commit).
                    PERFORM pg_advisory_xact_lock(1634758244, 0);
                    SELECT coalesce(max(version), 0) INTO stream_version FROM events
                        WHERE stream_id = v_stream;
                    IF p_expected[b] <> -1 AND stream_version <> p_expected[b] THEN
                        RAISE EXCEPTION 'stream % is at version %, not %', v_stream,
                            stream_version, p_expected[b]
                            USING ERRCODE = 'SD409', DETAIL = stream_version::text;
                    END IF;
                    b := b + 1;
                    CONTINUE;
                END IF;
                upto := e + p_counts[b] - 1;
                SELECT max(a.position) INTO appended
                    FROM append_events(v_stream, p_expected[b], p_ids[e:upto], p_types[e:upto],
                                       p_schemas[e:upto], p_data[e:upto],
                                       p_metadata[e:upto]) AS a;
                newest := greatest(newest, appended);
                e := upto + 1;
                b := b + 1;
            END LOOP;
            RETURN QUERY SELECT g, newest, NULL::text, NULL::text, NULL::text, NULL::text,
                                NULL::text;
        EXCEPTION WHEN OTHERS THEN
            -- Variables keep what they were set to: skip the rest of this group's batches.
            WHILE b <= n_batches AND p_groups[b] = g LOOP
                e := e + p_counts[b];
                b := b + 1;
            END LOOP;
            grp := g;
            last_position := NULL;
            stream := v_stream;
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                                    detail = PG_EXCEPTION_DETAIL,
                                    constraint_name = CONSTRAINT_NAME;
            RETURN NEXT;
        END;
    END LOOP;
END;
$$;
