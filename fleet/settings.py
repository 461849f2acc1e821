"""Settings, read once from LABFLEET_* environment variables at the entry point and passed in."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

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
    # `labfleet serve` speaks HTTPS itself with the certificate and key of the `tls` group; off = plain HTTP
    # (a developer's machine, or behind the district's reverse proxy, which sets X-Forwarded-Proto).
    tls: bool = False
    # Strict-Transport-Security max-age sent on every HTTPS answer: one year, the value browsers' preload
    # lists ask for; 0 sends no header.
    hsts_max_age_s: int = Field(default=365 * 24 * 3600, ge=0)


class MqttSettings(BaseModel):
    # embedded (amqtt in-process), mosquitto (managed child process), external (url), or none.
    broker: str = "embedded"
    url: str = "mqtt://127.0.0.1:1883"
    topic_prefix: str = "labfleet"
    # The service's own MQTT identity (ingest, commands). For managed brokers an empty password means
    # "generate one per start"; for an external broker set it (or put it in the URL).
    service_username: str = "labfleet-service"
    service_password: str = ""
    # Managed brokers (embedded, mosquitto) listen here; loopback unless deliberately opened up.
    listen_host: str = "127.0.0.1"
    listen_port: int = 1883
    # The plain (unencrypted) device listener on listen_port. The documented production settings turn it off
    # and keep the TLS listener only: a terminal's password never crosses the classroom Wi-Fi in clear.
    plain_listener: bool = True
    # Managed brokers' TLS device listener (MQTT over TLS 1.2+, certificate from the `tls` group).
    tls: bool = False
    tls_port: int = 8883
    # The broker's host name as terminals reach it (it must be a name in the server certificate); enrollment
    # answers mqtts://<public_host>:<tls_port>. Empty = listen_host.
    public_host: str = ""
    # Managed mosquitto only: the loopback listener for the service's own clients (ingest workers, commands,
    # rollouts), where client ids are free; on listen_port every client id is replaced by the username, so
    # no device can take over another's session. 0 picks a free port at start; set it when separate
    # `labfleet ingest` workers run beside a managed mosquitto (their mqtt.url points here).
    service_listen_port: int = 0
    # Generated mosquitto config, password and ACL files, and its persistence store.
    data_dir: str = "var/mqtt"
    mosquitto_bin: str = "mosquitto"
    # Managed mosquitto's dynamic-security plugin (device ACLs that refuse a forbidden SUBSCRIBE); empty finds
    # the one installed with mosquitto (Debian: /usr/lib/<arch>/mosquitto_dynamic_security.so).
    mosquitto_dynsec_plugin: str = ""
    # When `serve` runs as root, the managed mosquitto drops to this account (Debian's package creates it);
    # it never runs as root.
    mosquitto_user: str = "mosquitto"
    # Managed mosquitto's connect recorder (fleet/runtime/connect_log.py), compiled with gcc against
    # mosquitto-dev at start: cached here, rebuilt when its source or mosquitto's headers change.
    mosquitto_plugin_cache: str = "var/cache/mosquitto-plugin"
    # Shared-subscription group: every ingest worker of one deployment joins it to split the stream.
    ingest_group: str = "ingest"
    # Join the shared group ($share/<group>/...). Needed for N > 1 workers; off for a single worker because
    # mosquitto 2.0 does not restore shared subscriptions from its persistence file, so messages published
    # between a broker restart and the worker's re-subscribe would be dropped (a plain subscription keeps
    # them).
    ingest_shared: bool = False
    # `labfleet serve` runs one ingest worker in-process; turn off when `labfleet ingest` workers run instead.
    ingest_in_service: bool = True
    # Bounded ingest queue: past this many uncommitted messages the socket is paused and the broker holds
    # the rest in the persistent session (10,000 x 4 KiB worst case = 40 MB).
    ingest_queue_max: int = 10_000
    # A batch commits at this many messages or after ingest_batch_ms, whichever comes first: 2,000 rows per
    # transaction amortises the commit; 50 ms keeps heartbeat->state latency well under the 250 ms target.
    ingest_batch_max: int = 2_000
    ingest_batch_ms: int = 50
    # No message for this long -> offline (backstop behind the LWT): 3 missed 60 s heartbeats.
    heartbeat_timeout_s: int = 180
    # Dead letters kept for inspection; older ones are pruned so a flood of junk cannot fill the disk.
    dead_letters_max: int = 10_000
    # /readyz says "not ready" when the oldest uncommitted message is older than this: 30 s is half a
    # heartbeat, long before presence (180 s) would be judged on stale data.
    ready_max_ingest_lag_s: float = Field(default=30.0, gt=0)


class TlsSettings(BaseModel):
    # Where `labfleet tls init` writes the district CA and the server certificate (ca.pem, ca.key, server.pem,
    # server.key); keys are 0600.
    dir: str = "var/tls"
    # Operator-owned files instead (a certificate from the district's own or a public CA): the server
    # certificate chain, its key, and the CA certificate terminals verify it against. Empty = the file in dir.
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    # /readyz and the console warn this many days before the server certificate (or the CA) expires: time
    # for `labfleet tls renew` and a broker restart in a holiday, not at the 08:00 bell.
    renew_warning_days: int = Field(default=30, ge=1, le=365)


class ApiSettings(BaseModel):
    # Lists are capped so one request cannot pull the whole fleet into memory.
    max_page_size: int = 500
    default_page_size: int = 100
    # Failed enrollments allowed per minute from one client address, and against one claim token, before
    # further attempts get 429: enough for a technician's typos, far too few to guess tokens or serials.
    # Successes are not limited: at the 08:00 bell a whole school enrolls through one NAT address.
    enroll_failures_per_minute_per_source: int = Field(default=30, ge=1)
    enroll_failures_per_minute_per_token: int = Field(default=10, ge=1)


class MetricsSettings(BaseModel):
    # /metrics is open to these networks (the Prometheus host); everyone else needs the bearer token.
    allowed_networks: list[str] = ["127.0.0.0/8", "::1/128"]
    # Bearer token for scrapes from elsewhere; empty = only the allowed networks may scrape.
    token: str = ""
    # How often the device plane rebuilds the fleet-state snapshot the scrape reads (and the per-period
    # concurrency roll-up): 15 s matches Prometheus' scrape interval, and each rebuild reads a few small
    # tables.
    snapshot_interval_s: float = Field(default=15.0, gt=0, le=300)
    # `labfleet ingest` workers serve their own /metrics on worker_port_base + index (9101, 9102, ... as in
    # monitoring/prometheus/prometheus.yml), on this host; 0 turns it off.
    worker_host: str = "127.0.0.1"
    worker_port_base: int = Field(default=9101, ge=0, le=65535)


class RolloutSettings(BaseModel):
    # Content-addressed firmware store: <artifact_dir>/<sha[:2]>/<sha256>.
    artifact_dir: str = "var/artifacts"
    # Key for the short-lived signed download URLs in update commands (devices hold no API token).
    url_key: str = "change-me-labfleet-artifact-url-key"
    # A download URL lives 30 minutes: long enough for one window's download, short enough that a leaked
    # URL is soon useless; every new download command carries a fresh one.
    url_ttl_seconds: int = 1800
    # Image signing: "" = images unsigned; otherwise an HMAC-SHA256 key shared with the devices
    # (ed25519 needs the `cryptography` package, which the deployment does not install).
    signing_key: str = ""
    # Updates may use this share of a school's uplink unless the school's policy says otherwise: 20% leaves
    # the lesson traffic its room even when an update runs late.
    default_uplink_share: float = 0.2
    # Concurrent downloads per school unless its policy says otherwise: a school's access points serve
    # ~30 terminals each; 20 downloads at once stay well inside one AP's airtime.
    default_max_concurrent_downloads: int = 20
    # The job's tick: 5 s reacts to progress and bell changes promptly at a few queries per tick.
    step_seconds: float = 5.0
    # Bytes per chunk the artifact server writes; 64 KiB keeps token-bucket granularity fine at 20 Mbit/s.
    chunk_bytes: int = 64 * 1024
    # Token-bucket burst per school: 0.25 s of the school's rate, so no 10 s window exceeds the cap by 3%.
    burst_seconds: float = 0.25
    # The service's URL as terminals reach it, for download links in update commands ("" = http://host:port).
    public_base_url: str = ""


class PlanTargets(BaseModel):
    """The district plan's rollout targets (regional action plan 2025-2027)."""

    smart_classrooms: int = Field(default=500, ge=0)
    digital_labs: int = Field(default=50, ge=0)
    terminals: int = Field(default=10_000, ge=0)


class ReportSettings(BaseModel):
    targets: PlanTargets = PlanTargets()
    # Per-district overrides keyed by district id, e.g. LABFLEET_REPORTS__DISTRICT_TARGETS='{"2":
    # {"terminals": 900}}'.
    district_targets: dict[int, PlanTargets] = {}
    # Only straight-line is implemented; the field exists so the report names its method.
    depreciation_method: Literal["straight_line"] = "straight_line"
    # Five years is the usual book life of school IT equipment; also "past its service life" for replacements.
    service_life_years: int = Field(default=5, ge=1, le=50)
    # Share of the equipment budget that should go to AI devices (the plan says at least 10% a year).
    ai_budget_target_share: float = Field(default=0.10, ge=0, le=1)
    # Device kinds that count as AI equipment; devices placed in AI labs count too.
    ai_device_kinds: list[str] = ["robot", "mcu_kit", "sensor"]
    # The yearly equipment budget the AI share is measured against; unset = the period's actual spend.
    equipment_budget: Decimal | None = None
    # Below this many active minutes per week a fielded device is "idle" (one 40-minute lesson a week).
    idle_minutes_per_week: int = Field(default=40, ge=0)
    # Warranty report: warranties ending within this many days are listed.
    warranty_horizon_days: int = Field(default=90, ge=1, le=3650)
    # Security inspection: a token or console user with no use for this many days is stale (a term's break is
    # ~60 days; 90 catches what nobody needs any more without flagging the summer holiday).
    inspection_stale_days: int = Field(default=90, ge=1, le=3650)
    # Where the inspection reads the firmware profiles' withdrawn versions ("" = the shipped folder).
    profile_dir: str = ""
    # PDF printer (read by fleet.services.reports.pdf): auto = headless Chromium when installed (~25x less
    # CPU than WeasyPrint on long tables), else WeasyPrint; chromium_path overrides `chromium` on PATH.
    pdf_engine: Literal["auto", "chromium", "weasyprint"] = "auto"
    chromium_path: str = ""
    # Planned replacements: a device with this many failures (entries into repair) in its life is replaced.
    replace_after_failures: int = Field(default=3, ge=1)
    # Monthly job: where the standard set is written, how many months are kept, which reports and formats.
    folder: str = "var/reports"
    keep_last: int = Field(default=12, ge=1)
    monthly_enabled: bool = True
    monthly_reports: list[str] = [
        "coverage",
        "inventory",
        "reliability",
        "warranty",
        "utilisation",
        "budget",
        "screentime",
    ]
    monthly_formats: list[str] = ["xlsx", "html", "json"]
    # How often the monthly job checks whether a month is due: hourly is plenty for a monthly job.
    monthly_poll_seconds: float = Field(default=3600, gt=0)

    def targets_for(self, district_id: int | None) -> PlanTargets:
        if district_id is not None and district_id in self.district_targets:
            return self.district_targets[district_id]
        return self.targets


class RetentionSettings(BaseModel):
    """How long history is kept (fleet/services/retention.py). The audit log and its hash chain are never
    pruned: they are the district's record of who changed what."""

    enabled: bool = True
    # Usage roll-ups (bytes, active minutes, screen time, lesson-peak concurrency): two school years, so the
    # year-on-year reports still have last year to compare against.
    usage_days: int = Field(default=730, ge=1)
    # Presence transitions (online/offline): a term and a half; the reliability report looks back one term.
    presence_days: int = Field(default=180, ge=1)
    # Dead letters are for debugging a device or a firmware; a month is plenty (ingest also caps their count).
    dead_letter_days: int = Field(default=30, ge=1)
    # Finished commands (done, failed, expired, cancelled): a term; queued or sent ones are never removed.
    command_days: int = Field(default=120, ge=1)
    # The nightly run starts at this UTC hour: 02:00 is after the last evening class and before the bell.
    run_hour_utc: int = Field(default=2, ge=0, le=23)
    # Rows deleted per statement: keeps each transaction short so ingest is never blocked for long.
    batch_rows: int = Field(default=5_000, ge=100)


class ConsoleSettings(BaseModel):
    # A console session ends after this long without a request (a technician's bench break), and at the
    # latest after session_max_hours (one working day), whatever its activity.
    session_idle_minutes: int = Field(default=60, ge=1, le=24 * 60)
    session_max_hours: int = Field(default=12, ge=1, le=24 * 7)
    # Failed sign-ins per minute from one address: enough for typos, far too few to guess passwords.
    sign_in_failures_per_minute: int = Field(default=10, ge=1)
    # After this many failed sign-ins in a row an account is locked for lockout_minutes (the owner or an
    # admin waits it out; a success resets the count).
    lockout_after: int = Field(default=5, ge=1)
    lockout_minutes: int = Field(default=15, ge=1)
    # The first-admin link `serve` prints on a fresh install: one use, one hour.
    setup_link_minutes: int = Field(default=60, ge=1, le=24 * 60)
    # Cookies are marked Secure when the request is HTTPS (directly or X-Forwarded-Proto from the proxy);
    # set this to force it behind a proxy that does not say.
    force_secure_cookies: bool = False


class Settings(BaseSettings):
    """All LabFleet settings; nested groups use `__`, e.g. LABFLEET_HTTP__PORT=9000."""

    model_config = SettingsConfigDict(env_prefix="LABFLEET_", env_nested_delimiter="__", extra="ignore")

    database_url: str = Field(default=f"sqlite+aiosqlite:///{DEFAULT_DB_PATH}")
    # Time zone for schools created without one; bells ring in local time.
    default_timezone: str = "UTC"
    # Key for pseudonymising anything person-related (HMAC); set it in production.
    pseudonym_key: str = "change-me-labfleet-pseudonym-key"
    # The site's language for reports, exports and messages when the user names none (en or zh-CN).
    locale: str = "en"
    http: HttpSettings = HttpSettings()
    mqtt: MqttSettings = MqttSettings()
    tls: TlsSettings = TlsSettings()
    api: ApiSettings = ApiSettings()
    metrics: MetricsSettings = MetricsSettings()
    rollouts: RolloutSettings = RolloutSettings()
    reports: ReportSettings = ReportSettings()
    console: ConsoleSettings = ConsoleSettings()
    retention: RetentionSettings = RetentionSettings()
    log_level: str = "INFO"

    def sqlite_path(self) -> Path | None:
        """The database file when the URL is SQLite, else None."""
        prefix = "sqlite+aiosqlite:///"
        if self.database_url.startswith(prefix):
            rest = self.database_url[len(prefix) :]
            return None if rest in ("", ":memory:") else Path(rest)
        return None
