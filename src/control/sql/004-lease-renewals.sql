-- mc schema, version 4: a lease expires because its renewals stopped, not because the database's wall
-- clock says so (docs/architecture.md, "Leases").
--
-- Until now a lease carried a deadline of clock_timestamp() + TTL, and the sweep re-queued what was
-- past it by now(): a step of the database host's clock (NTP, a VM resumed) expired every lease at
-- once while its agents were renewing it. Now every renewal counts in lease_renewals, and each
-- control replica watches those counts on its own monotonic clock (src/control/lease-watch.c): a lease
-- expires when its count has not moved for its TTL plus the grace, and the expiry is an UPDATE
-- conditional on the count the replica saw, so that a renewal racing it wins or loses as a whole.
-- lease_expires_at stays, for people to read; no decision is taken on it any more.

ALTER TABLE tasks ADD COLUMN lease_renewals bigint NOT NULL DEFAULT 0,  -- renewals of the current lease
                  ADD COLUMN lease_ttl_ms integer;                       -- the longest TTL its holder was given

-- The deadline index served the sweep by deadline; nothing reads by deadline now, and without it a
-- renewal, which changes no indexed column, is a HOT update.
DROP INDEX tasks_lease_deadline_idx;
