-- mc schema, version 10: a task's status is checked by its type, not by a CHECK on the table.
--
-- PostgreSQL reads a table's CHECK constraints back from their stored text and plans them again at
-- every statement that writes a row: the status's CHECK cost each push (an INSERT) and each claim,
-- start or result (an UPDATE) about 8 µs of PostgreSQL's CPU, a fifth of the push's INSERT without its
-- trigger (bench/control/README.md). A domain's constraint is planned once per session and kept in its
-- type cache. The values allowed are the same.
--
-- The column changes type without a rewrite: text and a domain over text are stored alike, and the
-- domain has no constraint yet while the column changes, so only the partial indexes that name a
-- status are built again (the queue's: queued tasks only). Adding the constraint then reads the table
-- once to check its rows. The triggers that name the column are dropped and created again as they
-- were, within this transaction, so that no change goes unseen: mc_task_changed only where it exists
-- (functions.sql creates it, after the migrations, on a new database).
CREATE DOMAIN mc_task_status AS text;

DO $$
DECLARE
        had_changed boolean := EXISTS (SELECT 1 FROM pg_trigger
                                        WHERE tgrelid = 'tasks'::regclass AND tgname = 'mc_task_changed');
BEGIN
        DROP TRIGGER IF EXISTS mc_task_changed ON tasks;
        DROP TRIGGER mc_task_reserve_update ON tasks;
        DROP TRIGGER mc_task_reserve_delete ON tasks;

        ALTER TABLE tasks ALTER COLUMN status TYPE mc_task_status;

        CREATE TRIGGER mc_task_reserve_update AFTER UPDATE OF status, lease_node, nano_cpus, memory_bytes ON tasks
                FOR EACH ROW EXECUTE FUNCTION mc_task_reserve();
        CREATE TRIGGER mc_task_reserve_delete AFTER DELETE ON tasks FOR EACH ROW
                WHEN (OLD.status IN ('leased', 'running') AND OLD.lease_node IS NOT NULL)
                EXECUTE FUNCTION mc_task_reserve();
        IF had_changed THEN
                CREATE TRIGGER mc_task_changed AFTER UPDATE OF status, updated_at ON tasks FOR EACH ROW
                        WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.updated_at IS DISTINCT FROM NEW.updated_at)
                        EXECUTE FUNCTION mc_task_event();
        END IF;
END
$$;

ALTER DOMAIN mc_task_status ADD CONSTRAINT mc_task_status_check
        CHECK (VALUE IN ('queued', 'leased', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled'));
ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
