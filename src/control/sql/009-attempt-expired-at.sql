-- mc schema, version 9: when an attempt's lease expired, kept apart from its status.
--
-- A result that arrives after its lease expired, while nobody holds the task since, is taken
-- (mc_finish in functions.sql): the attempt then gets the result's status, and expired_at keeps
-- the fact that the control had given up on it meanwhile (a false recall when its node was alive).
ALTER TABLE attempts ADD COLUMN expired_at timestamptz;

UPDATE attempts SET expired_at = ended_at WHERE status = 'expired';
