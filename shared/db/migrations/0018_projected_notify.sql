-- Each checkpoint the projector saves is announced on 'snapdeploy_projected' (its
-- position), when its transaction commits: a process waiting until the read models show
-- what it appended (read your writes) is woken then, instead of re-reading the checkpoint.
CREATE FUNCTION notify_projected() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('snapdeploy_projected', NEW.position::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER checkpoints_projected
    AFTER INSERT OR UPDATE OF position ON checkpoints
    FOR EACH ROW WHEN (NEW.name = 'projector')
    EXECUTE FUNCTION notify_projected();
