-- Read models. Every table here is a projection of the event store, written only by
-- shared.projections and rebuilt from position 0 by `snapdeploy projections rebuild`.

CREATE TABLE vm_instances (
    id                  uuid        PRIMARY KEY,
    account_id          text        NOT NULL,
    user_id             text,
    name                text        NOT NULL,
    display_name        text        NOT NULL,
    instance_name       text        NOT NULL,
    zone_id             text        NOT NULL,
    service_offering_id text,
    cpu_number          integer     NOT NULL,
    cpu_speed           integer,
    memory_mb           integer     NOT NULL,
    vm_snapshot_id      text,
    template_id         text,
    host_id             text,
    pool_id             text,
    hypervisor_ref      text,
    nics                jsonb       NOT NULL,
    state               text        NOT NULL,
    error_text          text,
    current_snapshot_id text,
    imported            boolean     NOT NULL,
    created             timestamptz NOT NULL,
    updated             timestamptz NOT NULL,
    removed             timestamptz,
    last_position       bigint      NOT NULL
);
CREATE INDEX vm_instances_account ON vm_instances (account_id);

CREATE TABLE async_jobs (
    id             uuid        PRIMARY KEY,
    account_id     text        NOT NULL,
    user_id        text        NOT NULL,
    cmd            text        NOT NULL,
    instance_type  text        NOT NULL,
    instance_id    uuid        NOT NULL,
    status         smallint    NOT NULL,  -- 0 pending, 1 succeeded, 2 failed
    result_code    integer     NOT NULL,
    error_code     integer,
    error_text     text,
    created        timestamptz NOT NULL,
    completed      timestamptz
);
CREATE INDEX async_jobs_instance ON async_jobs (instance_id);

-- The spec's table: which VM snapshot is seeded as a template on which primary storage
-- pool. `id` is the global position of the event that started the seed, so a rebuild
-- gives every row the same id again.
CREATE TABLE vmsnapshot_spool_ref (
    id             bigint      PRIMARY KEY,
    pool_id        text        NOT NULL,
    vm_snapshot_id text        NOT NULL,
    created        timestamptz,
    install_path   varchar(255),
    state          varchar(255),
    CONSTRAINT vmsnapshot_spool_ref_once UNIQUE (vm_snapshot_id, pool_id)
);

-- Everything else the API lists: zones, hosts, pools, networks, offerings, templates,
-- VM snapshots, volumes. `data` holds the kind's own fields; `version` is the version of
-- the object's stream, used as the expected version when appending to it.
CREATE TABLE catalog (
    kind       text        NOT NULL,
    id         text        NOT NULL,
    zone_id    text,
    account_id text,
    name       text        NOT NULL,
    state      text        NOT NULL,
    data       jsonb       NOT NULL,
    version    integer     NOT NULL,
    created    timestamptz NOT NULL,
    removed    timestamptz,
    PRIMARY KEY (kind, id)
);
CREATE INDEX catalog_account ON catalog (kind, account_id);

-- Lets the gateway find a job's VM straight from the store while the projector catches up.
CREATE INDEX events_job_id ON events ((data ->> 'job_id')) WHERE data ? 'job_id';
