"""Migration files: numbering without gaps or repeats, statements, the shipped set."""

from __future__ import annotations

import pytest

from connectors.clickhouse.migrate import MigrationError, packaged, parse
from connectors.clickhouse.tables import TABLES, VIEWS


def test_versions_run_from_one_without_gaps_or_repeats():
    assert [m.version for m in parse({"0002_b.sql": "", "0001_a.sql": ""})] == [1, 2]
    with pytest.raises(MigrationError, match="missing \\[2\\]"):
        parse({"0001_a.sql": "", "0003_c.sql": ""})
    with pytest.raises(MigrationError, match="version 1 is also"):
        parse({"0001_a.sql": "", "0001_b.sql": ""})
    with pytest.raises(MigrationError, match="NNNN_name.sql"):
        parse({"1_a.sql": ""})


def test_statements_split_at_semicolons_ending_a_line_and_drop_comments():
    (m,) = parse({"0001_a.sql": "-- note; not a statement\nCREATE TABLE a (s String DEFAULT ';')"
                                ";\n\nCREATE VIEW b AS\nSELECT 1;\n-- end\n"})
    assert m.statements == ["CREATE TABLE a (s String DEFAULT ';')", "CREATE VIEW b AS\nSELECT 1"]
    assert len(m.checksum) == 64


def test_the_shipped_migrations_create_every_declared_table_and_view():
    text = "\n".join(m.sql for m in packaged())
    for name in [t.name for t in TABLES.values()] + list(VIEWS):
        assert f"EXISTS {name}\n" in text or f"EXISTS {name} AS" in text, name


def test_the_lag_command_watches_the_topics_the_sink_consumes():
    from streams.lag import SINK_TOPICS

    assert set(SINK_TOPICS) == set(TABLES)


def test_a_printed_dsn_never_shows_the_password():
    from connectors.clickhouse.client import shown

    assert shown("http://analyst:s3cret@ch:8123/db") == "http://analyst:***@ch:8123/db"
    assert shown("chdb://./var/chdb") == "chdb://./var/chdb"
    assert "s3cret" not in shown("https://u:s3cret@h/x")
