-- Supabase database webhooks for manda-processing: row triggers that POST each change
-- on the tables the webhook routes watch to the `webhook` function.
--
--   psql -X -v ON_ERROR_STOP=1 \
--        -v webhook_url=https://webhook-PROJECT_NUMBER.REGION.run.app \
--        -v routes="$(cat webhook_routes.json)" \
--        [-v timeout_ms=5000] [-v secret_name=processing_webhook_secret] \
--        -f deploy/supabase/webhook_triggers.sql "$ADMIN_DATABASE_URL"
--
-- (deploy/deploy.sh runs exactly this when WEBHOOK_TRIGGERS=apply.)
--
-- What is watched: `routes` is the webhook function's own routes table (the JSON of
-- WEBHOOK_ROUTES / WEBHOOK_ROUTES_FILE); each table any route names gets one trigger
-- for the union of the events its routes want, so no change is sent that no route uses.
--
-- The secret: stored in Supabase Vault, read when the trigger fires, never written here
-- nor in the catalog. Create it once per project, with the same value as the Secret
-- Manager secret behind WEBHOOK_SECRET (deploy/README.md shows rotation):
--   select vault.create_secret('<the webhook secret>', 'processing_webhook_secret');
-- The function sends it as `Authorization: Bearer <secret>`.
--
-- Why not supabase_functions.http_request, which the dashboard's "Database Webhooks"
-- use? It takes the request headers as trigger arguments, so the secret would sit in
-- pg_trigger in plain text, readable by every database role, and rotating it would mean
-- re-creating every trigger. post_row_change below does what it does - the same JSON
-- body ({type, table, schema, record, old_record}), sent by pg_net's net.http_post,
-- asynchronously once the transaction commits - but builds its headers when it fires.
--
-- No change is lost: pg_net sends once and never retries (a cold start beyond the
-- timeout, a 503, a deploy or an unknown queue drops the request), and keeps its queue in
-- unlogged tables. So the trigger also writes the same body to manda_processing.outbox,
-- in the changing transaction itself: the row exists exactly when the change committed.
-- The webhook stays the fast path; the scheduled `drain` reconciles the outbox
-- (shared/outbox/): an event older than OUTBOX_GRACE_SECONDS becomes its jobs through the
-- same routes table and so with the same job ids the webhook derives, which pg-boss's
-- same-id rule turns into nothing when the delivery did arrive. Then the row is deleted.
-- drain's role needs USAGE on the schema and SELECT, UPDATE, DELETE on the table when it
-- is not the role applying this file (deploy/README.md).
--
-- Safe to re-run: it replaces the function and the triggers, and removes this trigger
-- from tables no route watches any more, all in one transaction (which also keeps every
-- statement on one server connection through Supabase's transaction pooler).

\set ON_ERROR_STOP on
\if :{?webhook_url}
\else
\set webhook_url ''
\endif
\if :{?routes}
\else
\set routes ''
\endif
\if :{?timeout_ms}
\else
\set timeout_ms 5000
\endif
\if :{?secret_name}
\else
\set secret_name processing_webhook_secret
\endif

BEGIN;

-- Values for the DO block below (psql does not substitute variables inside $$ bodies),
-- local to this transaction.
\o /dev/null
SELECT set_config('manda_processing.webhook_url', :'webhook_url', true),
       set_config('manda_processing.routes', :'routes', true),
       set_config('manda_processing.timeout_ms', :'timeout_ms', true),
       set_config('manda_processing.secret_name', :'secret_name', true);
\o

CREATE SCHEMA IF NOT EXISTS manda_processing;
-- Nobody needs to reach into this schema: triggers call the function by its oid.
REVOKE ALL ON SCHEMA manda_processing FROM PUBLIC;

-- Every change a trigger sent (or would have sent), kept until drain has made sure its
-- jobs exist. `event` is the webhook's request body, byte for byte the same JSON value.
-- A row drain could not turn into jobs yet (an unknown queue, an event the routes refuse)
-- stays, with how often it was tried, why not, and when to try again.
CREATE TABLE IF NOT EXISTS manda_processing.outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event       jsonb       NOT NULL,
    created_on  timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts    integer     NOT NULL DEFAULT 0,
    held_until  timestamptz,
    last_error  text
);
REVOKE ALL ON TABLE manda_processing.outbox FROM PUBLIC;

CREATE OR REPLACE FUNCTION manda_processing.post_row_change()
RETURNS trigger
LANGUAGE plpgsql
-- Runs as its owner, who may read Vault, whichever role made the change; the fixed
-- search_path keeps that role's objects from standing in for the ones named here.
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    target_url  text    := TG_ARGV[0];
    wait_ms     integer := TG_ARGV[1]::integer;
    vault_name  text    := TG_ARGV[2];
    secret      text;
    payload     jsonb;
BEGIN
    payload := jsonb_build_object(
        'type', TG_OP,
        'table', TG_TABLE_NAME,
        'schema', TG_TABLE_SCHEMA,
        'record', CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE to_jsonb(NEW) END,
        'old_record', CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE to_jsonb(OLD) END
    );
    -- The guarantee: part of this transaction, so it commits exactly when the change does.
    INSERT INTO manda_processing.outbox (event) VALUES (payload);

    SELECT s.decrypted_secret INTO secret
      FROM vault.decrypted_secrets AS s
     WHERE s.name = vault_name;
    IF secret IS NULL OR secret = '' THEN
        -- The row change itself must not fail over this: say so, and send nothing (without
        -- the secret the webhook would refuse it anyway); the outbox row still makes its job.
        RAISE WARNING 'manda_processing: no Vault secret "%"; % on %.% not sent to the webhook',
            vault_name, TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME;
        RETURN NULL;
    END IF;
    -- The fast path: queued by pg_net now, sent once after commit.
    PERFORM net.http_post(
        url := target_url,
        body := payload,
        params := '{}'::jsonb,
        headers := jsonb_build_object(
            'Content-Type', 'application/json',
            'Authorization', 'Bearer ' || secret
        ),
        timeout_milliseconds := wait_ms
    );
    RETURN NULL; -- AFTER trigger: the result is ignored
END
$fn$;

REVOKE ALL ON FUNCTION manda_processing.post_row_change() FROM PUBLIC;

DO $do$
DECLARE
    trigger_name constant text := 'manda_processing_webhook';
    webhook_url  text := current_setting('manda_processing.webhook_url');
    routes_text  text := current_setting('manda_processing.routes');
    timeout_text text := current_setting('manda_processing.timeout_ms');
    secret_name  text := current_setting('manda_processing.secret_name');
    routes       jsonb;
    watched      oid[] := '{}';
    target       record;
    relation     regclass;
BEGIN
    IF webhook_url !~ '^https://[^[:space:]'']+$' THEN
        RAISE EXCEPTION 'webhook_url must be the webhook function''s https:// URL (psql -v webhook_url=...), got "%"', webhook_url;
    END IF;
    IF timeout_text !~ '^[0-9]{1,6}$' OR timeout_text::integer NOT BETWEEN 100 AND 300000 THEN
        RAISE EXCEPTION 'timeout_ms must be a number of milliseconds between 100 and 300000, got "%"', timeout_text;
    END IF;
    BEGIN
        routes := routes_text::jsonb;
    EXCEPTION WHEN others THEN
        RAISE EXCEPTION 'routes must be the webhook routes JSON (psql -v routes="$(cat FILE)"): %', SQLERRM;
    END;
    IF jsonb_typeof(routes -> 'routes') IS DISTINCT FROM 'array' OR jsonb_array_length(routes -> 'routes') = 0 THEN
        RAISE EXCEPTION 'routes must be {"routes": [...]} with at least one route';
    END IF;
    IF to_regprocedure('net.http_post(text, jsonb, jsonb, jsonb, integer)') IS NULL THEN
        RAISE EXCEPTION 'net.http_post is missing: enable the pg_net extension (Database > Extensions)';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM vault.decrypted_secrets WHERE name = secret_name) THEN
        RAISE EXCEPTION 'Supabase Vault has no secret named "%"; create it first: select vault.create_secret(''<the webhook secret>'', ''%'');',
            secret_name, secret_name;
    END IF;

    FOR target IN
        SELECT coalesce(route ->> 'schema', 'public') AS schema_name,
               route ->> 'table' AS table_name,
               array_agg(DISTINCT event ORDER BY event) AS events
          FROM jsonb_array_elements(routes -> 'routes') AS route,
               jsonb_array_elements_text(route -> 'events') AS event
         GROUP BY 1, 2
         ORDER BY 1, 2
    LOOP
        IF target.table_name IS NULL OR NOT target.events <@ ARRAY['DELETE', 'INSERT', 'UPDATE'] THEN
            RAISE EXCEPTION 'route for %.% has no table or an event other than INSERT, UPDATE, DELETE: %',
                target.schema_name, target.table_name, target.events;
        END IF;
        relation := to_regclass(format('%I.%I', target.schema_name, target.table_name));
        IF relation IS NULL THEN
            RAISE EXCEPTION 'routes name table %.%, which does not exist', target.schema_name, target.table_name;
        END IF;
        watched := watched || relation::oid;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = relation AND tgname = trigger_name) THEN
            EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, relation);
        END IF;
        EXECUTE format(
            'CREATE TRIGGER %I AFTER %s ON %s FOR EACH ROW EXECUTE FUNCTION manda_processing.post_row_change(%L, %L, %L)',
            trigger_name, array_to_string(target.events, ' OR '), relation, webhook_url, timeout_text, secret_name);
        RAISE NOTICE 'manda_processing: % on % -> %', array_to_string(target.events, ', '), relation, webhook_url;
    END LOOP;

    -- Tables that no route watches any more.
    FOR relation IN
        SELECT tgrelid::regclass FROM pg_trigger
         WHERE tgname = trigger_name AND NOT tgrelid = ANY (watched)
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, relation);
        RAISE NOTICE 'manda_processing: trigger removed from %', relation;
    END LOOP;
END
$do$;

COMMIT;
