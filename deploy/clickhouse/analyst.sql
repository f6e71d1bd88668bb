-- The analysts' access on a ClickHouse server: run once by an administrator (the sink's user
-- needs no access management), then give analysts CLICKHOUSE_ANALYST_DSN with user `analyst`.
-- readonly = 1: no write, no DDL, no setting changed, no table function (file, url, remote,
-- executable, s3 ...); readonly = 2 would let file() read the server's files.
-- The user cannot log in until the administrator gives it a password and the hosts it may
-- come from: ALTER USER analyst IDENTIFIED WITH sha256_password BY '...' HOST IP '10.0.0.0/8'
CREATE SETTINGS PROFILE IF NOT EXISTS pushcascade_analyst SETTINGS readonly = 1, allow_ddl = 0, allow_introspection_functions = 0, max_execution_time = 120, max_result_rows = 1000000;
CREATE ROLE IF NOT EXISTS pushcascade_reader;
GRANT SELECT ON pushcascade.* TO pushcascade_reader;
CREATE USER IF NOT EXISTS analyst IDENTIFIED WITH no_password HOST NONE SETTINGS PROFILE pushcascade_analyst;
GRANT pushcascade_reader TO analyst;
ALTER USER analyst DEFAULT ROLE pushcascade_reader;
