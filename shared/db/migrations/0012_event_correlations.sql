-- The events of one request's work, found by its correlation id: listEvents shows each
-- event with the user whose request began that work and the first event the request
-- appended (its parent), looked up per listed event.
CREATE INDEX events_by_correlation ON events ((metadata ->> 'correlation_id'), position);
