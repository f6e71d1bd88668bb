"""Security findings of issue 19, each reproduced: built-in keys, analyst SQL, link scanners,
personal data in error text, secrets in tracebacks, key rotation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from connectors.adapters.config import ProviderConfig
from connectors.adapters.registry import Registry
from connectors.settings import ConnectorSettings
from streams.cli import commands

ROOT = Path(__file__).parents[2]
#: The development key every copy of pushcascade once fell back to (published in its history).
OLD_DEV_KEY = "pushcascade-development-ack-key-change-me-0001"


def test_the_gateway_and_dispatcher_refuse_to_start_without_signing_keys(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No built-in key: one line naming the setting, exit code 1, nothing served."""
    monkeypatch.delenv("PUSHCASCADE_ACK_KEYS", raising=False)
    env = {k: v for k, v in os.environ.items() if k != "PUSHCASCADE_ACK_KEYS"}
    env.update({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "PUSHCASCADE_GATEWAY_PORT": "0"})
    for command in ("acks-gateway", "dispatch"):
        try:
            run = subprocess.run([sys.executable, "-m", "streams.cli", command], env=env,
                                 capture_output=True, text=True, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`pushcascade {command}` started without PUSHCASCADE_ACK_KEYS")
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 1 and len(lines) == 1, (command, run.stderr)
        assert "PUSHCASCADE_ACK_KEYS is not set" in lines[0], (command, lines)


@pytest.mark.parametrize("keys", [
    f'{{"dev": "{OLD_DEV_KEY}"}}',
    next(d for d in yaml.safe_load_all((ROOT / "deploy" / "secrets.example.yaml").read_text())
         if d["metadata"]["name"] == "pushcascade-gateway")["stringData"]["PUSHCASCADE_ACK_KEYS"],
])
def test_published_keys_are_refused(monkeypatch: pytest.MonkeyPatch, keys: str) -> None:
    monkeypatch.setenv("PUSHCASCADE_ACK_KEYS", keys)
    with pytest.raises(ValueError, match="published placeholder or development key"):
        ConnectorSettings().keys  # noqa: B018


def test_providers_fail_closed_without_their_real_credentials(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A real vendor's base URL with a development secret or bundled key is refused; only the
    simulator (no base URL) takes them."""
    assert Registry(ProviderConfig()).adapter("fcm").name == "fcm"  # the simulator
    monkeypatch.setenv("PUSHCASCADE_PROVIDER_FCM_BASE_URL", "https://fcm.googleapis.com")
    monkeypatch.setenv("PUSHCASCADE_PROVIDER_HUAWEI_BASE_URL",
                       "https://push-api.cloud.huawei.com")
    registry = Registry(ProviderConfig())
    with pytest.raises(ValueError, match="PUSHCASCADE_PROVIDER_FCM_PRIVATE_KEY is not set"):
        registry.adapter("fcm")
    with pytest.raises(ValueError, match="PUSHCASCADE_PROVIDER_HUAWEI_CLIENT_SECRET"):
        registry.adapter("huawei")
    with pytest.raises(ValueError, match="PUSHCASCADE_PROVIDER_"):
        registry.check_credentials()
    monkeypatch.setenv("PUSHCASCADE_PROVIDER_HUAWEI_CLIENT_SECRET", "a-real-secret")
    assert Registry(ProviderConfig()).adapter("huawei").name == "huawei"
    monkeypatch.setenv("PUSHCASCADE_PROVIDER_FCM_PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----")
    with pytest.raises(ValueError, match="PUSHCASCADE_PROVIDER_FCM_PROJECT_ID is still the dev"):
        Registry(ProviderConfig()).adapter("fcm")


def test_the_dispatcher_checks_every_providers_credentials_at_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSHCASCADE_PROVIDER_EMAIL_BASE_URL", "https://api.sendgrid.com")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    result = CliRunner().invoke(commands(), ["dispatch"])
    assert result.exit_code == 1
    assert "PUSHCASCADE_PROVIDER_EMAIL_API_KEY" in result.output


# -- 2. analyst SQL that cannot write -----------------------------------------------------------

#: Each reads or changes what an analyst must not: a write behind a comment, table functions that
#: read the process environment (the signing keys), the network or a shell, a file written,
#: a setting lifted.
ATTACKS = [
    "SELECT 'x --';\nDROP TABLE pushcascade.sends",
    "SELECT 1 /* ; */; DROP TABLE pushcascade.sends",
    "DROP TABLE pushcascade.sends",
    "INSERT INTO pushcascade.sends SELECT * FROM pushcascade.sends",
    "SELECT * FROM file('/proc/self/environ', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')",
    "SELECT * FROM executable('id', 'TSV', 'x String')",
    "SELECT * FROM remote('127.0.0.1', system.one)",
    "WITH (SELECT 1) AS x SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT 1 INTO OUTFILE '{outfile}'",
    "SELECT 1 SETTINGS readonly = 0",
    "CREATE TEMPORARY TABLE t (x UInt8)",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A chDB store with the delivery tables, its (writable) client as the sink holds it."""
    from connectors.clickhouse.client import client
    from connectors.clickhouse.migrate import Migrator

    dsn = f"chdb://{tmp_path_factory.mktemp('store')}"
    Migrator(dsn).up()
    ch = client(dsn, "pushcascade")
    yield ch
    ch.close()  # chDB: one path per process, free for the next test


class ServerPath:
    """Direct as it runs against a server: READ_ONLY sent with each query on a client that is
    not read-only itself (here a session of its own on the same engine, 26.9 like the server)."""

    def __init__(self, store) -> None:  # type: ignore[no-untyped-def]
        import clickhouse_connect

        from connectors.clickhouse.warehouse import READ_ONLY, reading

        self.session = clickhouse_connect.get_client(interface="chdb", path=store.path,
                                                     database="pushcascade")
        self.reading, self.settings = reading, READ_ONLY

    def text(self, sql: str, fmt: str) -> str:
        """What Direct.text does with a server's client."""
        from connectors.clickhouse.warehouse import QueryError

        statement = self.reading(self.session, sql)
        try:
            return bytes(self.session.raw_query(statement, fmt=fmt,
                                                settings=self.settings)).decode()
        except Exception as exc:
            raise QueryError(str(exc)) from None


@pytest.mark.parametrize("path", ["chdb", "server"])
@pytest.mark.parametrize("attack", ATTACKS)
def test_analyst_sql_refuses_disguised_writes_and_table_functions(
        store, tmp_path: Path, attack: str, path: str) -> None:  # type: ignore[no-untyped-def]
    from connectors.clickhouse.warehouse import Direct, QueryError

    outfile = tmp_path / "written.txt"
    analyst = Direct(store, "chdb") if path == "chdb" else ServerPath(store)
    with pytest.raises(QueryError):
        analyst.text(attack.format(outfile=outfile), "TSV")
    assert not outfile.exists()
    assert "sends" in analyst.text("SHOW TABLES", "TSV")
    assert analyst.text("SELECT count() FROM sends", "TSV") == "0\n"
    store.command("INSERT INTO pushcascade.dead_letters (source_topic) VALUES ('t')")  # writable
    if path == "server":
        analyst.session.close()


def test_the_analyst_profile_for_a_server_is_readonly_1_and_parses_on_clickhouse(
        store) -> None:  # type: ignore[no-untyped-def]
    """deploy/clickhouse/analyst.sql, each statement through ClickHouse's own parser (26.9, the
    server's engine); its profile holds what Direct sends (readonly=2 would allow file())."""
    import clickhouse_connect

    from connectors.clickhouse.warehouse import READ_ONLY

    text = (ROOT / "deploy" / "clickhouse" / "analyst.sql").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    statements = [s.strip() for s in body.split(";") if s.strip()]
    ch = clickhouse_connect.get_client(interface="chdb", path=store.path, settings=READ_ONLY)
    parsed = [ch.query("SELECT formatQuerySingleLine({q:String})", parameters={"q": s})
              .result_rows[0][0] for s in statements]
    profile = next(p for p in parsed if p.startswith("CREATE SETTINGS PROFILE"))
    assert READ_ONLY == {"readonly": 1}
    assert "readonly = 1," in profile and "allow_ddl = 0" in profile
    assert "GRANT SELECT ON pushcascade.* TO pushcascade_reader" in parsed
    assert not any(p.startswith("GRANT") and ("ALL" in p or "INSERT" in p) for p in parsed)
    assert any("HOST NONE" in p for p in parsed)  # no login before the operator sets one
    ch.close()


# -- 4. gateway hardening -----------------------------------------------------------------------


#: TestClient runs each request on a loop of its own; the server serves the app on one.
pytestmark = pytest.mark.filterwarnings("ignore:This AsyncLimiter instance is being re-used")


def gateway_client(**options: object):  # type: ignore[no-untyped-def]
    """The gateway's ASGI app in Starlette's TestClient (no lifespan: nothing is produced)."""
    from starlette.testclient import TestClient

    from connectors.gateway import create_app
    from streams.settings import Settings

    config = ConnectorSettings(**options)  # type: ignore[arg-type]
    app = create_app(Settings(kafka_bootstrap_servers="127.0.0.1:9"), config,
                     Registry(ProviderConfig()))
    return TestClient(app, client=("203.0.113.7", 5000))


def test_a_client_over_its_rate_gets_429() -> None:
    client = gateway_client(gateway_client_rate=5)
    codes = [client.get("/healthz").status_code for _ in range(8)]
    assert codes[:5] == [200] * 5 and set(codes[5:]) == {429}


def test_wechat_callbacks_must_carry_the_official_accounts_signature(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from connectors.adapters.signatures import wechat_signature

    monkeypatch.setenv("PUSHCASCADE_PROVIDER_WECHAT_CALLBACK_TOKEN", "wechat-server-token")
    client = gateway_client()
    event = (b"<xml><MsgType>event</MsgType><Event>TEMPLATESENDJOBFINISH</Event>"
             b"<MsgID>1</MsgID><Status>success</Status></xml>")
    assert client.post("/callbacks/wechat", content=event).status_code == 401
    now = str(int(time.time()))
    forged = {"timestamp": now, "nonce": "n1", "signature": "0" * 40}
    assert client.post("/callbacks/wechat", params=forged, content=event).status_code == 401
    stale = str(int(time.time()) - 3600)
    old = {"timestamp": stale, "nonce": "n1",
           "signature": wechat_signature("wechat-server-token", stale, "n1")}
    assert client.post("/callbacks/wechat", params=old, content=event).status_code == 401
    signed = {"timestamp": now, "nonce": "n1",
              "signature": wechat_signature("wechat-server-token", now, "n1")}
    answer = client.post("/callbacks/wechat", params=signed, content=event)
    assert answer.status_code == 200 and answer.json()["recorded"] == 0  # no receipt token


def test_sendgrid_event_webhook_signatures_are_verified() -> None:
    import base64
    import time

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from connectors.adapters.signatures import SignatureError, verify_sendgrid

    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(key.public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).decode()
    body, now = b'[{"event": "delivered", "receipt_token": "t"}]', time.time()
    stamp = str(int(now))
    signature = base64.b64encode(key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256())))
    headers = {"X-Twilio-Email-Event-Webhook-Signature": signature.decode(),
               "X-Twilio-Email-Event-Webhook-Timestamp": stamp}
    verify_sendgrid(public, headers, body, now)
    for bad_body, bad_now in ((body + b" ", now), (body, now + 3600)):
        with pytest.raises(SignatureError):
            verify_sendgrid(public, headers, bad_body, bad_now)
    with pytest.raises(SignatureError):
        verify_sendgrid(public, {}, body, now)


# -- 5. personal data and secrets in error text -------------------------------------------------

ADDRESSES = {"phone": "+8613812345678", "wechat_openid": "oWx-openid-4471",
             "email": "alice.liddell@example.com"}


def fragments(values: list[str], size: int = 5) -> set[str]:
    """Every run of `size` characters of each value (what a partial leak would show)."""
    return {v[i:i + size] for v in values for i in range(len(v) - size + 1)}


def test_no_dead_letter_of_a_personal_topic_carries_personal_data_in_its_text() -> None:
    """Every one-byte corruption of a profile and a device registration, as every consumer
    dead-letters it (streams.domain.records.dead_letter): no address nor push token in the
    error text, which goes to push.dlq, ClickHouse's dead_letters and the sink's log."""
    from schemas import Codec, SchemaError
    from streams.domain.records import dead_letter

    codec = Codec()
    profile = codec.encode("AccountProfile", {"account_id": "a1", **ADDRESSES,
                                              "updated_at": 1_800_000_000_000})
    device = codec.encode("DeviceRegistration", {
        "device_id": "d1", "account_id": "a1", "manufacturer": "HUAWEI", "model": "P60",
        "routes": ["HUAWEI"], "push_tokens": {"HUAWEI": "push-token-secret-9912"},
        "registered_at": 1_800_000_000_000})
    leaks = fragments([*ADDRESSES.values(), "push-token-secret-9912"])
    letters = 0
    for topic, value in (("t.account.profiles", profile), ("t.device.registry", device)):
        for i in range(5, len(value)):
            for byte in (0x00, 0x02, 0x7F, 0x80, 0xC3, 0xFF):
                broken = bytearray(value)
                broken[i] = byte
                try:
                    codec.decode(bytes(broken), topic=topic)
                except SchemaError as exc:
                    error = dead_letter(b"a1", None, topic, 0, i, str(exc), 0.0)["error"]
                    assert not {f for f in leaks if f in error}, error
                    letters += 1
    assert letters > 100
    quoted = dead_letter(None, None, "t.account.profiles", 0, 0,
                         "t.account.profiles: bad email 'alice.liddell@example.com'", 0.0)
    assert "alice" not in quoted["error"] and "withheld" in quoted["error"]


def test_no_secret_in_any_traceback_or_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    import traceback

    from connectors.clickhouse.client import client
    from streams.settings import Settings

    secret = "s3cr3t-pa55"
    for dsn in (f"htp://pushcascade:{secret}@ch:8123/db", f"pushcascade:{secret}@ch:8123",
                f"http://pushcascade:{secret}@[ch:8123/db"):
        try:
            client(dsn)
        except Exception as exc:  # noqa: BLE001  (every kind: none may print the password)
            text = "".join(traceback.format_exception(exc))
            assert secret not in text, text
        else:
            pytest.fail(f"{dsn} was accepted")
    monkeypatch.setenv("CLICKHOUSE_DSN", f"htp://pushcascade:{secret}@ch:8123/db")
    monkeypatch.setenv("PUSHCASCADE_PROVIDER_SMS_ACCESS_KEY_SECRET", secret)
    settings = Settings()
    assert secret not in repr(settings.connections) and secret not in str(vars(settings))
    assert secret not in repr(ProviderConfig().vendors)
    result = CliRunner().invoke(commands(), ["sql", "SELECT 1"])
    assert result.exit_code != 0
    text = result.output + "".join(traceback.format_exception(result.exception)
                                   if result.exception else [])
    assert secret not in text, text


@pytest.mark.parametrize("link,hosts,allowed", [
    ("https://shop.example/m1", "", True),
    ("javascript:alert(document.cookie)", "", False),
    ("http://shop.example/m1", "", False),
    ("data:text/html,<script>alert(1)</script>", "", False),
    ("https:///nohost", "", False),
    ("https://evil.example/", "shop.example,.cdn.example", False),
    ("https://img.cdn.example/x", "shop.example,.cdn.example", True),
    ("https://shop.example.evil.example/", "shop.example", False),
])
def test_read_links_lead_only_to_https_hosts_allowed(link: str, hosts: str,
                                                     allowed: bool) -> None:
    from schemas import RecordError, check_caps

    assert ConnectorSettings(link_hosts=hosts).allows_link(link) is allowed
    request = {"message_id": "m", "account_id": "a", "title": "t", "body": "b", "link": link,
               "created_at": 1_800_000_000_000}
    if link.startswith("https://") and "nohost" not in link:
        check_caps("PushRequest", request, 1_800_000_000.0)
    else:
        with pytest.raises(RecordError, match="https"):
            check_caps("PushRequest", request, 1_800_000_000.0)


# -- 6. rotation --------------------------------------------------------------------------------


def test_with_several_keys_the_signing_key_must_be_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a key must not make it sign before every gateway verifies it (RUNBOOK's order)."""
    old, new = "old-secret-of-thirty-two-characters!", "new-secret-of-thirty-two-characters!"
    monkeypatch.setenv("PUSHCASCADE_ACK_KEYS", f'{{"k1": "{old}"}}')
    assert ConnectorSettings().signing_key_id == "k1"
    monkeypatch.setenv("PUSHCASCADE_ACK_KEYS", f'{{"k1": "{old}", "k2": "{new}"}}')
    with pytest.raises(ValueError, match="name the one that signs in PUSHCASCADE_ACK_KEY_ID"):
        ConnectorSettings()
    monkeypatch.setenv("PUSHCASCADE_ACK_KEY_ID", "k1")  # step 1: k2 verifies, k1 still signs
    assert ConnectorSettings().signing_key_id == "k1"
    monkeypatch.setenv("PUSHCASCADE_ACK_KEY_ID", "k2")  # step 2: once every gateway has k2
    assert ConnectorSettings().signing_key_id == "k2"


# -- 7. deployment: the Schema Registry's auth, TLS and subject naming (manifests: test_deploy) --


def test_the_schema_registry_takes_basic_auth_tls_and_topic_subjects(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from schemas import Codec
    from streams.settings import Connections

    monkeypatch.setenv("SCHEMA_REGISTRY_BASIC_AUTH", "pushcascade-sink:r3g-s3cret")
    monkeypatch.setenv("SCHEMA_REGISTRY_CA_LOCATION", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "https://registry:8081")
    connections = Connections()
    assert connections.registry_config() == {
        "url": "https://registry:8081", "basic.auth.user.info": "pushcascade-sink:r3g-s3cret",
        "ssl.ca.location": "/etc/ssl/certs/ca-certificates.crt"}
    assert "r3g-s3cret" not in repr(connections)
    monkeypatch.setenv("SCHEMA_REGISTRY_SUBJECT_NAMING", "topic")
    monkeypatch.setenv("PUSHCASCADE_TOPIC_PREFIX", "prod.")
    codec = Codec("mock://security-test")
    codec.encode("Ack", {"message_id": "m", "account_id": "a", "channel": "SMS",
                         "kind": "READ", "acked_at": 1_800_000_000_000})
    assert codec.subject("Ack") == "prod.push.acks-value"
    assert "prod.push.acks-value" in codec.registry.get_subjects()
    assert codec.subject("CampaignEvent").endswith(".CampaignEvent")  # shares its topic


def test_a_wechat_callback_with_entities_is_refused_before_parsing() -> None:
    """An XML bomb (entity expansion) from the internet: refused as malformed, nothing expanded."""
    from connectors.adapters.wechat import WechatAdapter

    adapter = Registry(ProviderConfig()).adapter("wechat")
    assert isinstance(adapter, WechatAdapter)
    bomb = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            b"<xml><MsgType>event</MsgType><MsgID>&b;</MsgID></xml>")
    with pytest.raises(ValueError, match="DTD"):
        adapter.receipts({}, bomb)
