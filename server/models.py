"""The lab database's tables, as SQLAlchemy 2 declarative models.

Jobs mirror LAVA's TestJob as lavacli shows it (``state`` and ``health``
apart, as LAVA keeps them). A job's id is LAVA's: ``"N"`` for a single job,
``"N.M"`` for member M of multinode job N; ``number`` and ``sub_id`` hold the
two integers so listings order numerically. Results, log chunks and tokens
belong to their job or user and go with it (ON DELETE CASCADE). Health
changes name their board and their author by name, not by key: the history
outlives a board or a user.

Every timestamp is stored in UTC and read back timezone-aware, on SQLite
(which has no time zones) as on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JOB_STATES = ("Submitted", "Scheduling", "Scheduled", "Running", "Canceling", "Finished")
JOB_HEALTHS = ("Unknown", "Complete", "Incomplete", "Canceled")
VISIBILITIES = ("public", "personal")
DEVICE_HEALTHS = ("Good", "Unknown", "Looping", "Bad", "Maintenance", "Retired")

# Row ids that may grow past 2**31 (results, health changes); SQLite's rowid alias must be INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back aware; a naive value given is taken as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"a datetime is needed, not {type(value).__name__}")
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON()}


class Job(Base):
    """One archived job (a multinode member is a job of its own, ``N.M``)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    number: Mapped[int] = mapped_column(Integer)
    sub_id: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="")
    submitter: Mapped[str | None] = mapped_column(String(150))
    device_type: Mapped[str] = mapped_column(String(200))
    actual_device: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default="Submitted")
    health: Mapped[str] = mapped_column(String(16), default="Unknown")
    health_check: Mapped[bool] = mapped_column(Boolean, default=False)
    priority: Mapped[int] = mapped_column(Integer, default=50)
    visibility: Mapped[str] = mapped_column(String(16), default="public")
    submit_time: Mapped[datetime]
    start_time: Mapped[datetime | None]
    end_time: Mapped[datetime | None]
    definition: Mapped[str] = mapped_column(Text, default="")
    multinode_group: Mapped[str | None] = mapped_column(String(32))
    error_type: Mapped[str | None] = mapped_column(String(32))
    error_msg: Mapped[str | None] = mapped_column(Text)
    failure_comment: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(default=list)
    output_dir: Mapped[str | None] = mapped_column(Text)  # host:path of the job's files on its worker
    archived: Mapped[datetime] = mapped_column(default=utcnow)

    # Each filter column leads an index in the listing order that ends with the id: a page of
    # any depth is found by an index-only scan (then its rows by key), and so is the count.
    __table_args__ = (
        Index("ix_jobs_number", "number", "sub_id", "id"),
        Index("ix_jobs_state_number", "state", "number", "sub_id", "id"),
        Index("ix_jobs_health_number", "health", "number", "sub_id", "id"),
        Index("ix_jobs_device_type_number", "device_type", "number", "sub_id", "id"),
        Index("ix_jobs_submitter_number", "submitter", "number", "sub_id", "id"),
        Index("ix_jobs_actual_device_number", "actual_device", "number", "sub_id", "id"),
        Index("ix_jobs_multinode_group", "multinode_group"),
        Index("ix_jobs_end_time", "end_time"),
        Index("ix_jobs_health_check_actual_device_number", "health_check", "actual_device", "number"),
    )

    def to_dict(self, definition: bool = True) -> dict[str, Any]:
        """The job as LAVA's ``scheduler.jobs.show`` names it (times as ISO 8601)."""
        data: dict[str, Any] = {
            "id": self.id, "description": self.description, "submitter": self.submitter,
            "device_type": self.device_type, "device": self.actual_device, "state": self.state,
            "health": self.health, "health_check": self.health_check, "priority": self.priority,
            "visibility": self.visibility, "tags": list(self.tags or []),
            "submit_time": _iso(self.submit_time), "start_time": _iso(self.start_time),
            "end_time": _iso(self.end_time), "multinode_group": self.multinode_group,
            "error_type": self.error_type, "error_msg": self.error_msg,
            "failure_comment": self.failure_comment, "output_dir": self.output_dir,
        }
        if definition:
            data["definition"] = self.definition
        return data


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class Result(Base):
    """One test case of a job (the ``lava`` suite included); keys it does not name go to ``extra``."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    suite: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(Text)
    result: Mapped[str] = mapped_column(String(16))
    measurement: Mapped[float | None] = mapped_column(Float)
    units: Mapped[str | None] = mapped_column(String(100))
    level: Mapped[str | None] = mapped_column(String(64))
    logged: Mapped[datetime | None]
    extra: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)

    __table_args__ = (Index("ix_results_job_id_suite", "job_id", "suite"),)

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job_id, "suite": self.suite, "name": self.name, "result": self.result,
                "measurement": self.measurement, "units": self.units, "level": self.level,
                "logged": _iso(self.logged), "metadata": dict(self.extra or {})}


class LogChunk(Base):
    """``line_count`` lines of a job's output.yaml from ``first_line`` (0-based), newline-joined, zlib-compressed."""

    __tablename__ = "log_chunks"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    chunk_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_line: Mapped[int] = mapped_column(Integer)
    line_count: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (Index("ix_log_chunks_job_id_first_line", "job_id", "first_line", unique=True),)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(default=utcnow)


class Token(Base):
    """An API token: only a salted scrypt hash of its secret, and a non-secret digest to find it by."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    lookup: Mapped[str] = mapped_column(String(32), index=True)
    secret_hash: Mapped[str] = mapped_column(String(255))
    created: Mapped[datetime] = mapped_column(default=utcnow)


class RemoteToken(Base):
    """A secret a user gave the lab to present elsewhere (a notify callback's ``token:`` names it).

    Unlike an API token it must be sent as it is, so it is kept as given (as
    LAVA keeps its remote artifact tokens): only the lab server reads it.
    """

    __tablename__ = "remote_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    secret: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_remote_tokens_user_id_name", "user_id", "name", unique=True),)


class HealthChange(Base):
    """A board's health went from ``old`` to ``new``: who did it (None: the lab itself), when and why."""

    __tablename__ = "health_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    board: Mapped[str] = mapped_column(String(200))
    old: Mapped[str] = mapped_column(String(16))
    new: Mapped[str] = mapped_column(String(16))
    who: Mapped[str | None] = mapped_column(String(150))
    changed: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_health_changes_board_changed", "board", "changed"),)
