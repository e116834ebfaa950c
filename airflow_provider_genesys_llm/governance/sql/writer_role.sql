-- Least privilege for the pipeline's audit writes: {role} may call {append} and nothing else on the
-- chain. Run by the owner of the chain tables after chain_schema.sql, once per role and chain;
-- running it again changes nothing. The role itself is created (LOGIN, no superuser, no
-- inheritance) by `python -m airflow_provider_genesys_llm.governance create-writer-role`.

-- Whatever was granted on the tables before goes: no SELECT, INSERT, UPDATE, DELETE, TRUNCATE.
REVOKE ALL ON TABLE {chain}, {head} FROM {role};
-- Enough to name the function; not CREATE.
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT EXECUTE ON FUNCTION {append}(jsonb) TO {role};
