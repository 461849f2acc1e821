"""Settings, read once from LABFLEET_* environment variables at the entry point and passed in."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DB_PATH = Path("var/labfleet.db")


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    # 1 MiB: a 10,000-row device CSV is ~1 MB; larger bodies are refused before parsing.
    max_body_bytes: int = 1024 * 1024
    # CSV imports are the one place a body may be larger (a province-wide delivery).
    max_import_bytes: int = 16 * 1024 * 1024


class MqttSettings(BaseModel):
    # embedded (amqtt in-process), mosquitto (managed child process), external (url), or none.
    broker: str = "embedded"
    url: str = "mqtt://127.0.0.1:1883"
    topic_prefix: str = "labfleet"


class ApiSettings(BaseModel):
    # Lists are capped so one request cannot pull the whole fleet into memory.
    max_page_size: int = 500
    default_page_size: int = 100


class Settings(BaseSettings):
    """All LabFleet settings; nested groups use `__`, e.g. LABFLEET_HTTP__PORT=9000."""

    model_config = SettingsConfigDict(env_prefix="LABFLEET_", env_nested_delimiter="__", extra="ignore")

    database_url: str = Field(default=f"sqlite+aiosqlite:///{DEFAULT_DB_PATH}")
    # Time zone for schools created without one; bells ring in local time.
    default_timezone: str = "UTC"
    # Key for pseudonymising anything person-related (HMAC); set it in production.
    pseudonym_key: str = "change-me-labfleet-pseudonym-key"
    http: HttpSettings = HttpSettings()
    mqtt: MqttSettings = MqttSettings()
    api: ApiSettings = ApiSettings()
    log_level: str = "INFO"

    def sqlite_path(self) -> Path | None:
        """The database file when the URL is SQLite, else None."""
        prefix = "sqlite+aiosqlite:///"
        if self.database_url.startswith(prefix):
            rest = self.database_url[len(prefix):]
            return None if rest in ("", ":memory:") else Path(rest)
        return None
