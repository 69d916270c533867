-- One statement per commit: a handler's inbox row and all its appends, or the appends of
-- several concurrent requests (the gateway's group commit), in one round trip. The table
-- lock append_events() takes is then held only while PostgreSQL runs this function, never
-- across a round trip to a client that is busy elsewhere.
--
-- The commit is made of groups, each all or none on its own (a subtransaction): a group
-- whose inbox row exists already appends nothing (state 'duplicate'); a group whose
-- stream moved on, or whose events a write-side table refuses, is undone alone and
-- reported with its error's SQLSTATE, message, detail and constraint, and the stream it
-- failed on; the other groups commit. One row per group, in order.
--
-- Arguments: per group, the inbox (consumer, event id) or NULLs; per batch (one stream's
-- events, in group order), its group (from 1), stream, expected version and event count
-- (a batch of none only checks the version); per event (in batch order), what
-- append_events() takes.
CREATE FUNCTION commit_events(
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
                    LOCK TABLE events IN EXCLUSIVE MODE;
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
REVOKE ALL ON FUNCTION commit_events(text[], uuid[], integer[], text[], integer[], integer[],
    uuid[], text[], smallint[], jsonb[], jsonb[]) FROM PUBLIC;
