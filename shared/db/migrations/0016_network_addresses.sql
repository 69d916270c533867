-- Write-side tables of the networks, kept like the lookups of 0007-0010 by a trigger on
-- events in the transaction of each event of a network stream (network-<id>), so the planner
-- allocates and frees guest addresses, and updateNetwork checks a range, without folding a
-- stream that holds one allocation per VM ever deployed on the network.
--
-- network_state: one row per network stream: its latest NetworkImported (NULL if it was
-- never imported), whether it is gone, the range set by updateNetwork (NULL: its default
-- range) and the stream's version (an allocation is appended at that version, so two
-- allocations on one network conflict). network_addresses: each address a VM holds on a
-- network, with its place among the VM's NICs there. Its key makes an address held by one
-- VM at a time in the store itself: an allocation of an address another VM holds fails its
-- whole commit as a version conflict (SD409, as append_events() reports one), even one
-- appended without a version check, so the planner decides again. The same rules are
-- shared.domain.network.evolve, which the in-memory store folds with
-- (tests/contract/test_write_side.py checks both give the same answers).
CREATE TABLE network_state (
    network_id text    PRIMARY KEY,
    imported   jsonb,
    gone       boolean NOT NULL DEFAULT false,
    cidr       text,
    gateway    text,
    version    integer NOT NULL
);

CREATE TABLE network_addresses (
    network_id text    NOT NULL,
    address    text    NOT NULL,
    vm_id      text    NOT NULL,
    nic        integer NOT NULL,  -- its place among the VM's addresses on the network, from 1
    PRIMARY KEY (network_id, address)
);
CREATE INDEX network_addresses_by_vm ON network_addresses (network_id, vm_id);

-- ``guard``: refuse an allocation of an address held by another VM (false only for the
-- events stored before this migration, where the first holder keeps it).
CREATE FUNCTION summarise_network(e events, guard boolean) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    net    text := substr(e.stream_id, length('network-') + 1);
    stored integer;
BEGIN
    INSERT INTO network_state (network_id, version) VALUES (net, e.version)
        ON CONFLICT (network_id) DO UPDATE SET version = excluded.version;
    IF e.type = 'NetworkImported' THEN
        UPDATE network_state SET imported = e.data, gone = false WHERE network_id = net;
    ELSIF e.type = 'InventoryObjectGone' THEN
        UPDATE network_state SET gone = true WHERE network_id = net;
    ELSIF e.type = 'NetworkRangeSet' THEN
        UPDATE network_state SET cidr = e.data ->> 'cidr', gateway = e.data ->> 'gateway'
        WHERE network_id = net;
    ELSIF e.type = 'AddressesAllocated' THEN
        DELETE FROM network_addresses WHERE network_id = net AND vm_id = e.data ->> 'vm_id';
        INSERT INTO network_addresses (network_id, address, vm_id, nic)
            SELECT net, a.address, e.data ->> 'vm_id', a.n
            FROM jsonb_array_elements_text(e.data -> 'addresses') WITH ORDINALITY AS a(address, n)
            ON CONFLICT (network_id, address) DO NOTHING;
        GET DIAGNOSTICS stored = ROW_COUNT;
        IF guard AND stored < jsonb_array_length(e.data -> 'addresses') THEN
            RAISE EXCEPTION 'stream % allocates an address another VM holds on network %',
                            e.stream_id, net
                USING ERRCODE = 'SD409', DETAIL = (e.version - 1)::text;
        END IF;
    ELSIF e.type = 'AddressesReleased' THEN
        DELETE FROM network_addresses WHERE network_id = net AND vm_id = e.data ->> 'vm_id';
    END IF;
END;
$$;

CREATE FUNCTION events_summarise_network() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM summarise_network(NEW, true);
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_network_addresses AFTER INSERT ON events
    FOR EACH ROW WHEN (starts_with(NEW.stream_id, 'network-'))
    EXECUTE FUNCTION events_summarise_network();

-- Events stored before this migration, in their order.
DO $$
DECLARE
    e events;
BEGIN
    FOR e IN SELECT * FROM events WHERE starts_with(stream_id, 'network-')
             ORDER BY position LOOP
        PERFORM summarise_network(e, false);
    END LOOP;
END;
$$;
