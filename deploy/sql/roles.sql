-- Least-privilege roles for the outbox services. Run as a role that may create roles and owns
-- the outbox tables (or a superuser), in the outbox database, after `outbox migrate`:
--
--     psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -f deploy/sql/roles.sql
--
-- It creates four NOLOGIN group roles and grants them what their service needs; give each
-- service's login user one of them, e.g.:
--
--     CREATE ROLE gateway_app LOGIN PASSWORD '...' IN ROLE outbox_gateway;
--
-- The script is idempotent: run it again after a migration that adds a table.
--
--   outbox_gateway   inserts and reads jobs, writes audit rows; cannot change a job's status.
--                    (Its HTTP retry/cancel endpoints change jobs: a gateway that serves them to
--                    operators needs outbox_operator as well.)
--   outbox_relay     reads jobs and marks them published.
--   outbox_worker    claims, finishes, retries and prunes jobs; enqueues cron firings.
--   outbox_operator  everything operators do with `outbox jobs ...` and `outbox replay`.
-- No role may change or delete audit rows: the trail is append-only for all of them.

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['outbox_gateway', 'outbox_relay', 'outbox_worker', 'outbox_operator']
    LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', name);
        END IF;
    END LOOP;
END
$$;

-- Start from nothing, so a second run also takes back what an earlier version granted.
REVOKE ALL ON outbox_jobs, outbox_audit, alembic_version
    FROM outbox_gateway, outbox_relay, outbox_worker, outbox_operator;

-- Readiness probes compare the schema's revision with the code's.
GRANT SELECT ON alembic_version TO outbox_gateway, outbox_relay, outbox_worker, outbox_operator;

GRANT SELECT, INSERT ON outbox_jobs TO outbox_gateway;
GRANT SELECT, INSERT ON outbox_audit TO outbox_gateway;

-- Marking a row published writes these columns only.
GRANT SELECT ON outbox_jobs TO outbox_relay;
GRANT UPDATE (status, publish_receipt, published_at, updated_at) ON outbox_jobs TO outbox_relay;

GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_jobs TO outbox_worker;

GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_jobs TO outbox_operator;
GRANT SELECT, INSERT ON outbox_audit TO outbox_operator;
