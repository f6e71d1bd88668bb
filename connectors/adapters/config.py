"""Provider base URLs and credentials from PUSHCASCADE_PROVIDER_* (defaults: the simulator)."""

from __future__ import annotations

from functools import cached_property
from importlib import resources
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SIMULATOR_URL = "http://127.0.0.1:8790"
DEFAULT_ROUTES = ("HUAWEI=huawei,HONOR=huawei,XIAOMI=xiaomi,OPPO=oppo,VIVO=vivo,APNS=apns,"
                  "FCM=fcm,JPUSH=jpush,GETUI=getui")
DEFAULT_CHANNELS = "WECHAT=wechat,SMS=sms,EMAIL=email"


def dev_key(name: str) -> str:
    """A development key shipped for the simulator only (never for a real provider)."""
    return resources.files("connectors.simulator").joinpath("devkeys", name).read_text()


def _vendor(name: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=f"PUSHCASCADE_PROVIDER_{name.upper()}_", extra="ignore")


class FcmSettings(BaseSettings):
    """Firebase Cloud Messaging HTTP v1 with a service account (OAuth2 JWT-bearer grant)."""

    model_config = _vendor("fcm")
    base_url: str = Field("", description="https://fcm.googleapis.com; empty = simulator")
    token_url: str = Field("", description="https://oauth2.googleapis.com/token; empty = simulator")
    project_id: str = "pushcascade-dev"
    client_email: str = "dispatcher@pushcascade-dev.iam.gserviceaccount.com"
    private_key: SecretStr = Field(SecretStr(""), description="service-account PEM; empty: dev key")


class ApnsSettings(BaseSettings):
    """Apple Push Notification service with an ES256 provider token (.p8 key)."""

    model_config = _vendor("apns")
    base_url: str = Field("", description="https://api.push.apple.com; empty = simulator")
    key_id: str = "DEVKEY0001"
    team_id: str = "DEVTEAM001"
    topic: str = Field("com.example.pushcascade", description="the app's bundle id")
    private_key: SecretStr = Field(SecretStr(""), description="the .p8 PEM; empty = dev key")
    http2: bool = Field(True, description="HTTP/2 (Apple requires it; h2c towards the simulator)")


class HuaweiSettings(BaseSettings):
    """Huawei Push Kit (HMS) with OAuth2 client credentials."""

    model_config = _vendor("huawei")
    base_url: str = Field("", description="https://push-api.cloud.huawei.com; empty = simulator")
    token_url: str = Field("", description="https://oauth-login.cloud.huawei.com/oauth2/v3/token")
    app_id: str = "10000001"
    client_secret: SecretStr = SecretStr("huawei-dev-secret")


class XiaomiSettings(BaseSettings):
    """Xiaomi Mi Push server API (app secret in Authorization: key=...)."""

    model_config = _vendor("xiaomi")
    base_url: str = Field("", description="https://api.xmpush.xiaomi.com; empty = simulator")
    package_name: str = "com.example.pushcascade"
    app_secret: SecretStr = SecretStr("xiaomi-dev-secret")
    callback_url: str = Field("", description="receipt callback URL; empty: none")


class OppoSettings(BaseSettings):
    """OPPO push (auth_token from a sha256 sign of app key, timestamp and master secret)."""

    model_config = _vendor("oppo")
    base_url: str = Field("", description="https://api.push.oppomobile.com; empty = simulator")
    app_key: str = "oppo-dev-key"
    master_secret: SecretStr = SecretStr("oppo-dev-master-secret")
    callback_url: str = Field("", description="receipt callback URL; empty: none")


class VivoSettings(BaseSettings):
    """vivo push (authToken from an md5 sign of app id, key, timestamp and secret)."""

    model_config = _vendor("vivo")
    base_url: str = Field("", description="https://api-push.vivo.com.cn; empty = simulator")
    app_id: str = "10001"
    app_key: str = "vivo-dev-key"
    app_secret: SecretStr = SecretStr("vivo-dev-secret")
    callback_url: str = Field("", description="receipt callback URL; empty: none")


class JpushSettings(BaseSettings):
    """JPush REST API v3 (HTTP basic auth with app key and master secret)."""

    model_config = _vendor("jpush")
    base_url: str = Field("", description="https://api.jpush.cn; empty = simulator")
    app_key: str = "jpush-dev-key"
    master_secret: SecretStr = SecretStr("jpush-dev-master-secret")
    callback_url: str = Field("", description="receipt callback URL; empty: none")


class GetuiSettings(BaseSettings):
    """GeTui REST API v2 (token from a sha256 sign of app key, timestamp and master secret)."""

    model_config = _vendor("getui")
    base_url: str = Field("", description="https://restapi.getui.com; empty = simulator")
    app_id: str = "getui-dev-app"
    app_key: str = "getui-dev-key"
    master_secret: SecretStr = SecretStr("getui-dev-master-secret")


class WechatSettings(BaseSettings):
    """WeChat official-account template messages (access_token from appid and secret)."""

    model_config = _vendor("wechat")
    base_url: str = Field("", description="https://api.weixin.qq.com; empty = simulator")
    app_id: str = "wxdev0000000001"
    app_secret: SecretStr = SecretStr("wechat-dev-secret")
    template_id: str = Field("pushcascade-notice", description="the approved template's id")
    callback_token: SecretStr = Field(SecretStr(""), description="the Token of the official "
                                      "account's server configuration: callbacks must carry "
                                      "its signature (gateway; empty: not checked)")


class SmsSettings(BaseSettings):
    """Aliyun SMS (Dysmsapi SendSms, RPC style with an HMAC-SHA1 signature)."""

    model_config = _vendor("sms")
    base_url: str = Field("", description="https://dysmsapi.aliyuncs.com; empty = simulator")
    access_key_id: str = "sms-dev-key-id"
    access_key_secret: SecretStr = SecretStr("sms-dev-key-secret")
    sign_name: str = "pushcascade"
    template_code: str = "SMS_0001"


class EmailSettings(BaseSettings):
    """SendGrid v3 mail send API (bearer API key)."""

    model_config = _vendor("email")
    base_url: str = Field("", description="https://api.sendgrid.com; empty = simulator")
    api_key: SecretStr = SecretStr("SG.dev-key")
    sender: str = "noreply@pushcascade.example"
    webhook_public_key: str = Field("", description="the Signed Event Webhook's verification "
                                    "key: callbacks must carry its signature (gateway; empty: "
                                    "not checked)")


VENDOR_SETTINGS: dict[str, type[BaseSettings]] = {
    "fcm": FcmSettings, "apns": ApnsSettings, "huawei": HuaweiSettings, "xiaomi": XiaomiSettings,
    "oppo": OppoSettings, "vivo": VivoSettings, "jpush": JpushSettings, "getui": GetuiSettings,
    "wechat": WechatSettings, "sms": SmsSettings, "email": EmailSettings,
}


class ProviderConfig(BaseSettings):
    """Every provider's settings plus which adapter serves each route and channel."""

    model_config = SettingsConfigDict(env_prefix="PUSHCASCADE_PROVIDER_", extra="ignore")
    simulator_url: str = Field(DEFAULT_SIMULATOR_URL,
                               description="base of every provider whose BASE_URL is empty")
    routes: str = Field(DEFAULT_ROUTES, description="ROUTE=adapter pairs for APP sends")
    channels: str = Field(DEFAULT_CHANNELS, description="CHANNEL=adapter pairs (account-level)")
    timeout: float = Field(10.0, gt=0, description="seconds one provider request may take")

    @cached_property
    def vendors(self) -> dict[str, Any]:
        """The per-provider settings, read from the environment once."""
        return {name: cls(**{}) for name, cls in VENDOR_SETTINGS.items()}

    @classmethod
    def from_env(cls) -> ProviderConfig:
        """The configuration read from the environment."""
        return cls(**{})

    def credentials_problem(self, name: str) -> str | None:
        """Why provider `name` may not be called (a real vendor's base URL with a development
        credential, a bundled key or none), or None: only the simulator takes the dev ones."""
        vendor = self.vendors[name]
        if not getattr(vendor, "base_url", ""):
            return None  # the simulator
        prefix = f"PUSHCASCADE_PROVIDER_{name.upper()}_"
        fields = {f: (getattr(vendor, f), i.default) for f, i in type(vendor).model_fields.items()
                  if not f.startswith(("callback_", "webhook_"))}  # the gateway's, not ours
        for field, (value, default) in fields.items():
            if isinstance(value, SecretStr) and (not value.get_secret_value() or value == default):
                return (f"{prefix}BASE_URL points at the vendor but {prefix}{field.upper()} "
                        "is not set (development credentials go to the simulator only)")
        for field, (value, default) in fields.items():
            if isinstance(default, str) and "dev" in default.lower() and value == default:
                return (f"{prefix}BASE_URL points at the vendor but {prefix}{field.upper()} is "
                        f"still the development value {default!r}")
        return None

    def base_url(self, name: str) -> str:
        """The provider's base URL: its own setting, else the simulator's path for it."""
        own = str(getattr(self.vendors[name], "base_url", "") or "")
        return (own or f"{self.simulator_url.rstrip('/')}/{name}").rstrip("/")

    def pairs(self, spec: str) -> dict[str, str]:
        """Parse 'KEY=adapter,...' into a dict (keys upper-cased)."""
        out = {}
        for item in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ValueError(f"expected KEY=adapter, got {item!r}")
            out[key.strip().upper()] = value.strip().lower()
        return out
