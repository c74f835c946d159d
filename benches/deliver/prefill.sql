-- The tables as an hour at 1,000/s leaves them, in minutes (benches/deliver/soak.sh, PREFILL=N):
-- copies of the transfers already in the schema (a short run's, each delivered) until about N,
-- each with its own transfer id, sender reference and case, in every table a transfer has rows
-- in. Every copy is delivered and closed to the gateway: its outbox item is `delivered`, its
-- audit entries are on a chain of their own (`prefill`, whose hashes are the originals': a copy
-- is bulk, not a record), so the gateways' work and chains are their own.
--   psql -v n=3000000 -v schema=bench_replicas -f benches/deliver/prefill.sql
SET search_path = :schema;
BEGIN;
CREATE TEMP TABLE template AS
  SELECT transfer_id, row_number() OVER (ORDER BY transfer_id) AS r FROM transfers WHERE state = 'delivered';
CREATE TEMP TABLE copies AS
  SELECT t.transfer_id AS old_id, g,
         substr(t.transfer_id, 1, 10) || lpad((g * 10000000 + t.r)::text, 16, '0') AS new_id
  FROM template t, generate_series(1, greatest(1, :n / (SELECT count(*) FROM template))) g;
CREATE INDEX ON copies (old_id);
ANALYZE copies;
INSERT INTO transfers (transfer_id, sender, sender_ref, destination, state, overdue, requested_at, receive_by,
                       resolve_by, escalations, document, created_at, updated_at)
  SELECT c.new_id, t.sender, t.sender_ref || '-p' || c.g, t.destination, t.state, t.overdue, t.requested_at,
         t.receive_by, t.resolve_by, t.escalations, replace(t.document, t.transfer_id, c.new_id), t.created_at,
         t.updated_at
  FROM copies c JOIN transfers t ON t.transfer_id = c.old_id;
INSERT INTO outbox (destination, transfer_id, kind, payload, status, attempts, next_attempt_at, leased_until,
                    last_error, created_at, delivered_at)
  SELECT o.destination, c.new_id, o.kind, replace(o.payload, o.transfer_id, c.new_id), o.status, o.attempts,
         o.next_attempt_at, o.leased_until, o.last_error, o.created_at, o.delivered_at
  FROM copies c JOIN outbox o ON o.transfer_id = c.old_id AND o.status = 'delivered';
INSERT INTO events (transfer_id, origin, destination, kind, body, at, tx)
  SELECT c.new_id, e.origin, e.destination, e.kind, replace(e.body, e.transfer_id, c.new_id), e.at, e.tx
  FROM copies c JOIN events e ON e.transfer_id = c.old_id;
INSERT INTO audit (replica, at, actor, action, transfer_id, detail, prev_hash, hash)
  SELECT 'prefill', a.at, a.actor, a.action, c.new_id, replace(a.detail, a.transfer_id, c.new_id), a.prev_hash, a.hash
  FROM copies c JOIN audit a ON a.transfer_id = c.old_id;
INSERT INTO case_transfers (case_id, transfer_id, sender)
  SELECT k.case_id || '-p' || c.g, c.new_id, k.sender
  FROM copies c JOIN case_transfers k ON k.transfer_id = c.old_id;
-- The facts row as it is, whatever columns later releases added, with the copy's transfer id.
CREATE TEMP TABLE facts AS SELECT f.*, c.new_id FROM copies c JOIN transfer_facts f ON f.transfer_id = c.old_id;
UPDATE facts SET transfer_id = new_id;
ALTER TABLE facts DROP COLUMN new_id;
INSERT INTO transfer_facts SELECT * FROM facts;
COMMIT;
-- Vacuumed and analyzed as an hour's upkeep would have kept them: the run that follows measures
-- the gateway's own upkeep of what changes, not a first vacuum of every copy.
VACUUM (ANALYZE) transfers;
VACUUM (ANALYZE) outbox;
VACUUM (ANALYZE) events;
VACUUM (ANALYZE) audit;
VACUUM (ANALYZE) case_transfers;
VACUUM (ANALYZE) transfer_facts;
