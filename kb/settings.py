"""The one Settings class: every knob is a ``KB_*`` environment variable (or a line in ``.env``)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "circuit-kb"


ARTIFACT_STORES = ("files", "database")  # KB_ARTIFACT_STORE's values (kb.render.storage)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KB_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir, description="where the embedded defaults live")
    database_url: str = Field("", description="SQLAlchemy URL; empty: a SQLite file in the data folder")
    broker_url: str = Field("", description="Celery broker; empty: the embedded SQLite broker and a local worker")
    storage_dir: Path | None = Field(None, description="rendered artifacts; empty: <data_dir>/artifacts")
    artifact_store: str = Field(
        "",
        description="where rendered and uploaded images live: files (KB_STORAGE_DIR) or database (a table of the "
        "knowledge base's database, shared by every server and worker); empty: files on SQLite, database otherwise",
    )
    public_url: str = Field("http://127.0.0.1:8000", description="base of the stable neuron URLs")
    auto_upgrade: bool | None = Field(None, description="upgrade the schema on use; default: only for SQLite")
    render_batch: int = Field(
        64, description="units of one layer one message wakes a worker for (it takes them a device batch at a time)"
    )
    render_interactive_units: int = Field(
        16, description="a request for at most this many units (not a layer) goes to the interactive lane; more: bulk"
    )
    render_device_batch: int = Field(
        0,
        description="units rendered in one optimisation; 0: from the device "
        "(8 on a CPU, what fits in a GPU's free memory)",
    )
    render_lease_s: float = Field(300.0, description="a RUNNING job without a heartbeat for this long is re-queued")
    render_sweep_s: float = Field(15.0, description="how often each worker looks for stuck jobs")
    render_requeue_idle_s: float = Field(
        20.0, description="an idle worker re-sends a QUEUED job whose message has not come this long after it was due"
    )
    render_retry_base_s: float = Field(10.0, description="first retry delay of a failed render; doubles each time")
    render_visibility_timeout_s: int = Field(3600, description="Redis: redeliver an unacknowledged task after")
    render_bf16: bool | None = Field(
        None,
        description="bf16 feature visualisations (default on) on a GPU and on a CPU with native bf16 "
        "(AVX512-BF16 or AMX); never on other CPUs",
    )
    render_device: str = Field("", description="torch device for renders; empty: cuda if available, else cpu")
    render_max_size: int = Field(512, description="largest render size (pixels) a request may ask for; at most 512")
    render_max_steps: int = Field(4096, description="most optimisation steps a request may ask for; at most 4096")
    render_max_upsample: int = Field(512, description="largest upsample size (pixels) a request may ask for")
    render_max_seeds: int = Field(
        16, description="distinct seeds one unit may be rendered with (per kind); asking an existing seed is free"
    )
    render_queue_quota: int = Field(
        1024, description="unit-jobs one account may have queued or running at once (a layer of 512 counts 512)"
    )
    upload_max_bytes: int = Field(
        4 * 2**20, description="the largest image an editor may upload as a caricature's target (bytes, as sent)"
    )
    upload_max_pixels: int = Field(
        4096 * 4096, description="the most pixels an uploaded image may have (read from its header, before decoding)"
    )
    thumbnail_size: int = Field(64, description="the unit cards' thumbnail preset: FEATURE_VIS at this size (px)")
    thumbnail_steps: int = Field(16, description="the thumbnail preset's optimisation steps (seed 0, else lucent's)")
    view_thumbnails: bool = Field(
        True, description="pages ask for the thumbnails their cards lack (the view lane), for anyone browsing"
    )
    view_queue_max: int = Field(
        300, description="view-lane jobs queued or running per model, at most: past it, pages ask for none"
    )
    render_units_per_mutation: int = Field(
        64, description="requestRender counts against the mutation rate limit once per this many units, rounded up"
    )
    rate_limit_per_minute: float = Field(120.0, description="mutations per minute per account, on average")
    rate_limit_burst: int = Field(60, description="mutations an account may send at once; 0: the minute's")
    query_rate_limit: str = Field(
        "3000/minute",
        description="requests to /graphql and pages per client address (limits' notation, ';' between); empty: none",
    )
    redis_url: str = Field("", description="Redis for shared rate limits; empty: KB_BROKER_URL if it is redis://")
    query_cost_budget: int = Field(50_000, description="largest estimated result (values) one request may ask")
    answer_max_bytes: int = Field(
        8_000_000, description="largest answer in bytes of stored lists (circuit edges and notes) one request may get"
    )
    request_timeout_s: float = Field(30.0, description="a request still executing after this gets TIMEOUT")
    statement_timeout_s: float = Field(20.0, description="PostgreSQL statement_timeout of the API's connections")
    api_threads: int = Field(
        32,
        description="threads that execute GraphQL requests (off the event loop); the database pool holds as many "
        "connections (plus a few for sign-in lookups, /health and live events)",
    )
    db_pool_timeout_s: float = Field(
        5.0, description="a request waiting longer for a database connection gets UNAVAILABLE (at most half the limit)"
    )
    inline_cost: int = Field(
        500, description="compiled queries estimated at most this run on the event loop (if they need no I/O); 0: none"
    )
    header_timeout_s: float = Field(10.0, description="close a connection whose request headers take longer")
    body_timeout_s: float = Field(30.0, description="close a connection whose request body takes longer")
    max_header_bytes: int = Field(65536, description="request line and headers larger than this get 431")
    session_ttl_s: float = Field(14 * 86400.0, description="a sign-in session expires this long after sign-in")
    cookie_secure: bool | None = Field(
        None, description="Secure session cookies; default: when the request or KB_PUBLIC_URL is https"
    )
    signin_failures_per_account: int = Field(
        5, description="failed sign-ins for one account from one address before each further try must wait"
    )
    signin_failures_per_address: int = Field(
        20, description="failed sign-ins from one address (any names) before each further try must wait"
    )
    signin_backoff_first_s: float = Field(
        1.0, description="the wait after the allowed failures; it doubles with each further failure"
    )
    signin_backoff_max_s: float = Field(900.0, description="the longest wait between failed sign-ins")
    signin_window_s: float = Field(86400.0, description="how long a failed sign-in counts (and is kept)")
    trusted_proxies: str = Field(
        "127.0.0.1,::1",
        description="addresses or networks (comma-separated) of reverse proxies whose X-Forwarded-For "
        "names the client; empty: none",
    )
    live_streams_per_address: int = Field(
        100, ge=1, description="live streams (/events and GraphQL subscriptions) one client address may hold open"
    )
    subscriptions_per_connection: int = Field(
        20, ge=1, description="GraphQL subscriptions one WebSocket connection may run at once"
    )
    metrics: bool = Field(True, description="kb serve answers Prometheus scrapes at /metrics (false: 404)")
    metrics_allow: str = Field(
        "", description="addresses or networks (comma-separated) that may read /metrics; empty: any client"
    )
    worker_metrics_port: int = Field(
        0, ge=0, le=65535, description="kb worker serves its own Prometheus metrics on this port; 0: none"
    )
    worker_metrics_host: str = Field("127.0.0.1", description="the address kb worker's metrics port listens on")

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'circuit-kb.sqlite'}"

    @property
    def pool_timeout_s(self) -> float:
        """How long a request waits for a database connection: well inside its time limit, so a full pool
        answers UNAVAILABLE (retry) rather than TIMEOUT."""
        return max(0.0, min(self.db_pool_timeout_s, self.request_timeout_s / 2))

    @property
    def artifacts_dir(self) -> Path:
        return self.storage_dir or self.data_dir / "artifacts"

    @field_validator("artifact_store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("", *ARTIFACT_STORES):
            return value
        later = " (s3:// stores are not built yet)" if value.startswith("s3:") else ""
        raise ValueError(f"KB_ARTIFACT_STORE is {value!r}: it must be files or database, or empty{later}")

    @property
    def store(self) -> str:
        """The artifact store in use (``ARTIFACT_STORES``): KB_ARTIFACT_STORE, else the database's default."""
        return self.artifact_store or ("files" if self.is_sqlite else "database")

    @property
    def graphs_dir(self) -> Path:
        """Each model version's serving graph file (kb.graph.graph_file), mapped by the server processes."""
        return self.data_dir / "graphs"

    @property
    def broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.sqlite'}"

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
