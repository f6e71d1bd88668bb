"""The production profile: Kafka TLS/SASL, RocksDB sizes and the ClickHouse cluster DDL."""

from __future__ import annotations

import re
import ssl

import faust
import pytest

from connectors.clickhouse.cluster import SHARD_BY, ClusterError, on_cluster, state_table
from connectors.clickhouse.migrate import MigrationError, Migrator, packaged
from connectors.clickhouse.tables import TABLES, VIEWS
from streams.app import credentials, store_options
from streams.settings import Settings, SettingsError

SASL = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "pipeline", "KAFKA_SASL_PASSWORD": "s3cret-Pa55"}


def test_plaintext_adds_nothing_to_the_kafka_clients():
    assert Settings().connections.kafka_security() == {}
    assert credentials(Settings().connections) is None


def test_sasl_ssl_reaches_librdkafka_and_faust_and_the_password_is_never_printed(monkeypatch):
    for var, value in SASL.items():
        monkeypatch.setenv(var, value)
    connections = Settings().connections
    assert connections.kafka_security() == {
        "security.protocol": "sasl_ssl", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "pipeline", "sasl.password": "s3cret-Pa55"}
    creds = credentials(connections)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password) == ("pipeline", "s3cret-Pa55")
    assert str(creds.mechanism.value) == "SCRAM-SHA-512"
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    assert "s3cret" not in repr(connections) and "s3cret" not in str(connections)


def test_mutual_tls_passes_the_certificate_files(monkeypatch):
    ca = ssl.get_default_verify_paths().cafile or ssl.get_default_verify_paths().openssl_cafile
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("KAFKA_SSL_CA_LOCATION", ca)
    monkeypatch.setenv("KAFKA_SSL_CERTIFICATE_LOCATION", "/etc/pushcascade/client.pem")
    monkeypatch.setenv("KAFKA_SSL_KEY_LOCATION", "/etc/pushcascade/client.key")
    connections = Settings().connections
    assert connections.kafka_security() == {
        "security.protocol": "ssl", "ssl.ca.location": ca,
        "ssl.certificate.location": "/etc/pushcascade/client.pem",
        "ssl.key.location": "/etc/pushcascade/client.key"}
    monkeypatch.setenv("KAFKA_SSL_CERTIFICATE_LOCATION", "")
    assert isinstance(credentials(Settings().connections), faust.SSLCredentials)


def test_sasl_without_a_user_is_refused_naming_the_variables(monkeypatch):
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(SettingsError, match="KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        Settings()
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "TLS")
    with pytest.raises(SettingsError, match="KAFKA_SECURITY_PROTOCOL"):
        Settings()


def test_rocksdb_stores_get_the_configured_cache_and_buffer_sizes():
    assert store_options(Settings()) is None  # memory
    options = store_options(Settings(store="rocksdb://", rocksdb_block_cache_mb=512,
                                     rocksdb_write_buffer_mb=32, rocksdb_max_open_files=-1))
    assert options == {"block_cache_size": 512 << 20, "write_buffer_size": 32 << 20,
                       "max_open_files": -1}


def cluster_statements() -> dict[str, list[str]]:
    """Every shipped statement's cluster form, by the name it creates."""
    out = {}
    for m in packaged():
        for statement in m.statements:
            created = re.search(r"IF NOT EXISTS (\w+)", statement)
            if created is not None:  # an ALTER changes one of these (alter_statements)
                out[created.group(1)] = on_cluster(statement, "prod")
    return out


def alter_statements() -> list[str]:
    """The cluster form of every shipped ALTER."""
    return [s for m in packaged() for statement in m.statements
            if statement.startswith("ALTER") for s in on_cluster(statement, "prod")]


def test_an_alter_changes_the_replicated_tables_then_the_distributed_one():
    assert alter_statements() == [
        f"ALTER TABLE {name} ON CLUSTER `prod` MODIFY COLUMN device_count UInt16 "
        "DEFAULT least(length(device_ids), 65535)" for name in ("requests_local", "requests")]


def test_every_table_becomes_a_replicated_local_table_and_a_distributed_one_by_its_entity():
    found = cluster_statements()
    assert {t.name for t in TABLES.values()} | set(VIEWS) == set(found)
    for table in TABLES.values():
        local, distributed = found[table.name]
        assert local.startswith(f"CREATE TABLE IF NOT EXISTS {table.name}_local ON CLUSTER `prod`")
        assert "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/" \
               "{table}', '{replica}'" in local
        assert "TTL" in local or table.name in ("devices", "account_settings")
        shard = SHARD_BY.get(table.name, "account_id")
        assert all(column.strip() in table.all_columns for column in shard.split(","))
        assert distributed == (
            f"CREATE TABLE IF NOT EXISTS {table.name} ON CLUSTER `prod` AS {table.name}_local "
            f"ENGINE = Distributed(`prod`, currentDatabase(), {table.name}_local, "
            f"cityHash64({shard}))")
    assert found["devices"][0].count("'{replica}', offset)") == 1  # the version column stays
    for view in VIEWS:
        (statement,) = found[view]
        assert statement.startswith(f"CREATE VIEW IF NOT EXISTS {view} ON CLUSTER `prod` AS")


def test_clickhouse_parses_every_cluster_statement(chdb):
    statements = [s for found in cluster_statements().values() for s in found]
    statements += [*alter_statements(), state_table("schema_migrations", "prod")]
    for statement in statements:
        formatted = chdb.query("SELECT formatQuery({q:String})",
                               parameters={"q": statement}).result_rows[0][0]
        assert "ON CLUSTER prod" in formatted


def test_only_create_statements_have_a_cluster_form_and_a_cluster_needs_a_server():
    with pytest.raises(ClusterError, match="no cluster form"):
        on_cluster("ALTER TABLE sends ADD COLUMN x String", "prod")
    with pytest.raises(MigrationError, match="needs a ClickHouse server DSN"):
        Migrator("chdb://memory", cluster="prod")
    migrator = Migrator("http://ch.example:8123/pushcascade", cluster="prod")
    first = packaged()[0]
    assert len(migrator.statements(first)) == 2 * len(first.statements)


def test_an_sre_prints_the_cluster_ddl_without_reaching_the_cluster(tmp_path):
    import os

    from tests.helpers import run_cli

    env = {**os.environ, "CLICKHOUSE_DSN": "https://ops:pw@127.0.0.1:1/pushcascade",
           "CLICKHOUSE_CLUSTER": "prod"}
    done = run_cli("migrate", "sql", "--all", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE IF NOT EXISTS sends_local ON CLUSTER `prod`" in done.stdout
    assert "ENGINE = Distributed(`prod`, currentDatabase(), sends_local, cityHash64(account_id))" \
        in done.stdout
