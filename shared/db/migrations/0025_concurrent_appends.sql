-- Appends run side by side. Until now every append held one advisory lock exclusively
-- until its commit (0021), through the commit's flush to disk: appends from several
-- processes never shared a flush, and each waited for all those before it.
--
-- Now an append holds that lock (1634758244, "apnd" in ASCII, 0) shared, and the lock of
-- each stream it appends to ((1937011309, "strm"), hashtext of the stream) exclusively,
-- both until it commits. Two appends to one stream still take turns (the second sees the
-- first's version: a version conflict, never a duplicate key); appends to different streams
-- do not wait for each other.
--
-- Readers by position take the lock exclusively for the statement that reads
-- (read_events(), events_head()): every append that took a position before then has
-- committed or rolled back, so what they read has no hole a later commit could fill, which
-- is what a cursor by position needs (tests/contract/test_eventstore.py). A rebuild reads
-- in a snapshot taken after events_head() and only up to the position it returned.
--
-- Appends of the event types whose triggers write the write-side rows of other streams'
-- objects (an import, an assignment or an expunge of a VM writes its volumes' and
-- snapshots' rows) hold the lock exclusively, as every append did before: with appends
-- side by side, two transactions writing one row could otherwise apply in an order other
-- than their positions'. Every other trigger writes only rows of its own event's stream,
-- which that stream's lock keeps in order.
--
-- A transaction takes these locks in one statement (append_events() or commit_events()):
-- one that appended to a stream in one statement and then to another in a second could
-- wait for a second transaction doing the same the other way round (PostgreSQL would end
-- one of them as a deadlock). snapdeploy appends in one statement per transaction.
CREATE FUNCTION lock_appends(p_streams text[], p_types text[]) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    h integer;
BEGIN
    IF p_types && ARRAY['VmImported', 'VmAssigned', 'VmExpunged'] THEN
        PERFORM pg_advisory_xact_lock(1634758244, 0);
    ELSE
        PERFORM pg_advisory_xact_lock_shared(1634758244, 0);
    END IF;
    FOR h IN SELECT DISTINCT hashtext(s) FROM unnest(p_streams) AS s ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(1937011309, h);
    END LOOP;
END;
$$;
REVOKE ALL ON FUNCTION lock_appends(text[], text[]) FROM PUBLIC;

-- Up to p_limit events after position p_after, in order, none of them after a position
-- still being appended.
CREATE FUNCTION read_events(p_after bigint, p_limit integer) RETURNS SETOF events
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1634758244, 0);
    RETURN QUERY SELECT * FROM events WHERE position > p_after ORDER BY position
        LIMIT p_limit;
END;
$$;

-- The highest position stored, every position below it settled (committed or not to be).
CREATE FUNCTION events_head() RETURNS bigint
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1634758244, 0);
    RETURN (SELECT coalesce(max(position), 0) FROM events);
END;
$$;

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
    PERFORM lock_appends(ARRAY[p_stream], p_types);
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
    -- Every lock this commit's appends take, taken first, the streams' in one order: two
    -- commits that share streams never each hold one the other waits for.
    PERFORM lock_appends(p_streams, p_types);
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
