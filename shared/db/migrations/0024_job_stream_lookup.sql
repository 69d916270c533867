-- A job's stream is the stream of the first event that names the job
-- (EventStore.read_job_stream: queryAsyncJobResult before the projector has shown the job).
-- With an index on the job id alone, PostgreSQL could also walk every event in position
-- order until it met the job's, and with the plan it keeps for any job id it chose that
-- once the store held some 40,000 events: a read of every event for each such query,
-- 60-90 ms of the server's time at 5,000 VMs, and growing. Ordered by position within each
-- job id, this index finds the first event of a job with one entry.
CREATE INDEX events_job_id_first ON events ((data ->> 'job_id'), position)
    WHERE data ? 'job_id';
DROP INDEX events_job_id;
