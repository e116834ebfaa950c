-- The audit hash chain: its table, indexes, append-only trigger, head table and append function.
-- Run by the role that will own the tables (AuditChainStore.ensure_schema or create-writer-role).
-- Placeholders in braces are filled in by psycopg's sql module: identifiers quoted, literals escaped.

CREATE TABLE IF NOT EXISTS {chain} (
    seq bigint PRIMARY KEY CHECK (seq > 0),
    audit_id text NOT NULL UNIQUE,
    kind text NOT NULL,
    status text NOT NULL,
    dag_id text,
    run_id text,
    created_at timestamptz NOT NULL,
    record jsonb NOT NULL,
    prev_hash text NOT NULL,
    record_hash text NOT NULL
);
CREATE INDEX IF NOT EXISTS {dag_run_index} ON {chain} (dag_id, run_id);
CREATE INDEX IF NOT EXISTS {created_at_index} ON {chain} (created_at);
CREATE INDEX IF NOT EXISTS {kind_status_index} ON {chain} (kind, status, created_at);

CREATE TABLE IF NOT EXISTS {head} (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq bigint NOT NULL,
    record_hash text NOT NULL
);

CREATE OR REPLACE FUNCTION {guard}() RETURNS trigger LANGUAGE plpgsql AS $guard$ BEGIN
    RAISE EXCEPTION 'audit table %.% is append-only: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP;
END $guard$;
-- CREATE OR REPLACE TRIGGER needs Postgres 14 or later.
CREATE OR REPLACE TRIGGER {guard_trigger} BEFORE UPDATE OR DELETE OR TRUNCATE ON {chain}
    FOR EACH STATEMENT EXECUTE FUNCTION {guard}();

-- The only write path a writer role gets. SECURITY DEFINER runs it with the owner's rights, so the
-- caller needs EXECUTE and nothing on the tables. Everything that makes a row trustworthy happens
-- here, under the chain's advisory lock: seq, prev_hash, record_hash = sha256(prev_hash || the
-- jsonb text of the record) exactly as verify recomputes it, and created_at from the server clock
-- (whatever the caller sent is overwritten, so rows cannot be backdated). The search_path is fixed
-- to pg_catalog with pg_temp last and every table is schema-qualified, so objects a caller creates
-- cannot stand in for the ones used here.
CREATE OR REPLACE FUNCTION {append}(records jsonb)
RETURNS TABLE (appended_seq bigint, appended_hash text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $append$
DECLARE
    last_seq bigint;
    last_hash text;
    head_seq bigint;
    head_hash text;
    accepted_at text;
    item jsonb;
    document jsonb;
BEGIN
    IF jsonb_typeof(records) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'audit chain %: append takes a JSON array of records, not %',
            {chain_name}, jsonb_typeof(records);
    END IF;
    PERFORM pg_advisory_xact_lock({lock_key});
    SELECT c.seq, c.record_hash INTO last_seq, last_hash FROM {chain} AS c ORDER BY c.seq DESC LIMIT 1;
    SELECT h.seq, h.record_hash INTO head_seq, head_hash FROM {head} AS h;
    IF last_seq IS DISTINCT FROM head_seq OR last_hash IS DISTINCT FROM head_hash THEN
        RAISE EXCEPTION
            'audit chain % ends at seq=% but its head table records seq=%; appending would hide that, run verify',
            {chain_name}, coalesce(last_seq, 0), coalesce(head_seq, 0);
    END IF;
    last_seq := coalesce(last_seq, 0);
    last_hash := coalesce(last_hash, repeat('0', 64));
    -- Read after the lock, so seq order and time order agree.
    accepted_at := to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    FOR item IN SELECT e.value FROM jsonb_array_elements(records) AS e LOOP
        IF jsonb_typeof(item) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'audit chain %: each record must be a JSON object, not %', {chain_name}, jsonb_typeof(item);
        END IF;
        document := item || jsonb_build_object('created_at', accepted_at);
        appended_seq := last_seq + 1;
        appended_hash := encode(sha256(convert_to(last_hash || document::text, 'UTF8')), 'hex');
        INSERT INTO {chain} (seq, audit_id, kind, status, dag_id, run_id, created_at, record, prev_hash, record_hash)
        VALUES (appended_seq, document->>'audit_id', document->>'kind', document->>'status', document->>'dag_id',
                document->>'run_id', accepted_at::timestamptz, document, last_hash, appended_hash);
        last_seq := appended_seq;
        last_hash := appended_hash;
        RETURN NEXT;
    END LOOP;
    IF last_seq > coalesce(head_seq, 0) THEN
        INSERT INTO {head} (singleton, seq, record_hash) VALUES (true, last_seq, last_hash)
        ON CONFLICT (singleton) DO UPDATE SET seq = EXCLUDED.seq, record_hash = EXCLUDED.record_hash;
    END IF;
END
$append$;
-- New functions are executable by PUBLIC; only roles granted EXECUTE may append.
REVOKE ALL ON FUNCTION {append}(jsonb) FROM PUBLIC;
