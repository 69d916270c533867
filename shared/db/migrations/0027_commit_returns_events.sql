-- commit_events() also returns each appended event as stored: per group, the positions,
-- versions and recording times of its events, in the order it gave them. The process that
-- committed can then publish its events to JetStream at once, as the relay would have
-- (the relay still publishes every event, in position order: JetStream drops the repeat).
--
-- Its result's columns change, so the function is dropped and created again, with the
-- EXECUTE rights it had (the services' role's, 0017 and shared/db/_roles.py).
CREATE TEMPORARY TABLE commit_events_grantees ON COMMIT DROP AS
    SELECT DISTINCT pg_get_userbyid(a.grantee) AS grantee
    FROM pg_proc p, aclexplode(p.proacl) a
    WHERE p.oid = 'commit_events(text[], uuid[], integer[], text[], integer[], integer[],
                                 uuid[], text[], smallint[], jsonb[], jsonb[])'::regprocedure
      AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner;

DROP FUNCTION commit_events(text[], uuid[], integer[], text[], integer[], integer[], uuid[],
                            text[], smallint[], jsonb[], jsonb[]);

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
                 constraint_name text, stream text, positions bigint[], versions integer[],
                 recorded timestamptz[])
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
    g_positions bigint[];
    g_versions  integer[];
    g_recorded  timestamptz[];
    b_positions bigint[];
    b_versions  integer[];
    b_recorded  timestamptz[];
    v_stream  text;
BEGIN
    -- Every lock this commit's appends take, taken first, the streams' in one order: two
    -- commits that share streams never each hold one the other waits for.
    PERFORM lock_appends(p_streams, p_types);
    FOR g IN 1..n_groups LOOP
        newest := 0;
        g_positions := '{}';
        g_versions := '{}';
        g_recorded := '{}';
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
                                        NULL::text, NULL::text, NULL::text, NULL::bigint[],
                                        NULL::integer[], NULL::timestamptz[];
                    CONTINUE;
                END IF;
            END IF;
            WHILE b <= n_batches AND p_groups[b] = g LOOP
                v_stream := p_streams[b];
                IF p_counts[b] = 0 THEN
                    -- A batch of no events only checks its stream's version, under the
                    -- stream's lock taken above (no append to it slips in before this
                    -- commit).
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
                -- Each event as stored, in the order it was given (its version's).
                SELECT max(a.position), array_agg(a.position ORDER BY a.version),
                       array_agg(a.version ORDER BY a.version),
                       array_agg(a.recorded_at ORDER BY a.version)
                    INTO appended, b_positions, b_versions, b_recorded
                    FROM append_events(v_stream, p_expected[b], p_ids[e:upto], p_types[e:upto],
                                       p_schemas[e:upto], p_data[e:upto],
                                       p_metadata[e:upto]) AS a;
                newest := greatest(newest, appended);
                g_positions := g_positions || b_positions;
                g_versions := g_versions || b_versions;
                g_recorded := g_recorded || b_recorded;
                e := upto + 1;
                b := b + 1;
            END LOOP;
            RETURN QUERY SELECT g, newest, NULL::text, NULL::text, NULL::text, NULL::text,
                                NULL::text, g_positions, g_versions, g_recorded;
        EXCEPTION WHEN OTHERS THEN
            -- Variables keep what they were set to: skip the rest of this group's batches.
            WHILE b <= n_batches AND p_groups[b] = g LOOP
                e := e + p_counts[b];
                b := b + 1;
            END LOOP;
            grp := g;
            last_position := NULL;
            positions := NULL;
            versions := NULL;
            recorded := NULL;
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

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT grantee FROM commit_events_grantees LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION commit_events(text[], uuid[], integer[],'
                       ' text[], integer[], integer[], uuid[], text[], smallint[], jsonb[],'
                       ' jsonb[]) TO %I', r.grantee);
    END LOOP;
END;
$$;
