-- account_names: the name of every account and user, lowercased, kept like the lookups of
-- 0007-0009 by a trigger on events in the transaction of the event that names them. Its key
-- makes a name unique per kind in the store itself: a second account (or user) of a name
-- fails the whole commit (unique_violation), which the store reports as a version conflict,
-- so createAccount decides again and answers that the name is taken. The same rule is in
-- shared/eventstore/_memory.py (tests/contract/test_write_side.py checks both agree).
CREATE TABLE account_names (
    kind       text NOT NULL CHECK (kind IN ('account', 'user')),
    name       text NOT NULL,
    id         text NOT NULL,
    account_id text NOT NULL,
    PRIMARY KEY (kind, name)
);

CREATE FUNCTION events_name_accounts() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    IF NEW.type = 'AccountCreated' THEN
        INSERT INTO account_names VALUES ('account', lower(NEW.data ->> 'name'),
                                          NEW.data ->> 'account_id', NEW.data ->> 'account_id');
    ELSE
        INSERT INTO account_names VALUES ('user', lower(NEW.data ->> 'username'),
                                          NEW.data ->> 'user_id', NEW.data ->> 'account_id');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_account_names AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.type IN ('AccountCreated', 'UserCreated'))
    EXECUTE FUNCTION events_name_accounts();

-- Events stored before this migration (a name stored twice before keeps its first owner).
INSERT INTO account_names
    SELECT CASE type WHEN 'AccountCreated' THEN 'account' ELSE 'user' END,
           lower(CASE type WHEN 'AccountCreated' THEN data ->> 'name'
                           ELSE data ->> 'username' END),
           CASE type WHEN 'AccountCreated' THEN data ->> 'account_id'
                     ELSE data ->> 'user_id' END,
           data ->> 'account_id'
    FROM events WHERE type IN ('AccountCreated', 'UserCreated') ORDER BY position
    ON CONFLICT DO NOTHING;
