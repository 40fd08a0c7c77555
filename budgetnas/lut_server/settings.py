"""The one settings class of the LUT server (environment variables prefixed ``BUDGETNAS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BUDGETNAS_", extra="ignore")

    db_url: str = Field(default="sqlite:///budgetnas.db",
                        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://")
    admin_token: str | None = Field(default=None,
                                    description="Bearer token for writes; unset: every admin call is refused")
    reads_require_token: bool = Field(default=False,
                                      description="require a (admin or agent) token for GET routes too")
    max_attempts: int = Field(default=3, ge=1, description="leases a job may use before it fails for good")
    default_lease_seconds: float = Field(default=60.0, gt=0)
    max_lease_seconds: float = Field(default=3600.0, gt=0)
    max_archs: int = Field(default=10_000, ge=1, description="architectures per predict request")
    max_body_bytes: int = Field(default=16 << 20, ge=1024, description="JSON request bodies")
    max_upload_bytes: int = Field(default=512 << 20, ge=1024,
                                  description="artifact and checkpoint uploads")
    db_pool_size: int = Field(default=10, ge=1)
    predictor_cache_luts: int = Field(default=16, ge=1, description="LUTs kept in memory for prediction")
    predict_revision_ttl: float = Field(default=1.0, ge=0,
                                        description="without a change watch (or while it is down): seconds a LUT "
                                                    "copy is used before its revision is checked again (changes "
                                                    "made through this process apply at once)")
    predict_change_watch: bool = Field(default=True,
                                       description="hear of LUT revision changes from the database (SQLite "
                                                   "data_version, PostgreSQL LISTEN) so a warm predict reads "
                                                   "nothing from it and no worker serves a changed LUT")
    migrate_on_start: bool = Field(default=False,
                                   description="run migrations when the app starts (serve does it anyway)")
