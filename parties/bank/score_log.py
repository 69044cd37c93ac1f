"""The bank's log of served scores: every score the scoring service answered, kept for monitoring.

Why: every score the bank serves is its own output (probability of default and points for an
enterprise that authorised the bank). Keeping them lets post-loan monitoring
(``parties.bank.monitoring``) compare the served population with the training one and each
enterprise with its earlier scores, without asking any holder again. ``ScoreLog``: every served
score (``Score`` and each scored enterprise of ``ScoreBatch``): time, model name, version, USCC,
probability of default, points, request kind (``one``/``batch``). SQLAlchemy; SQLite
``NODE_DIR/scores.db`` by default, any database URL otherwise. ``log_served``: the scoring
service's hook, which never lets a failing log fail a score.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import (
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    select,
)
from sqlalchemy.exc import SQLAlchemyError

from federation.errors import XinyidaiError
from federation.store import SqlStore

if TYPE_CHECKING:
    from parties.config import NodeConfig

__all__ = [
    "KINDS",
    "SCORE_LOG_URL_ENV",
    "MonitoringError",
    "ScoreLog",
    "ServedScore",
    "iso_time",
    "log_served",
    "to_epoch",
]

log = logging.getLogger(__name__)

SCORE_LOG_URL_ENV = "XINYIDAI_SCORE_LOG_URL"
"""Database URL of the score log when the node config names none (default NODE_DIR/scores.db)."""
KINDS = ("one", "batch")


class MonitoringError(XinyidaiError):
    """A monitoring question cannot be answered (no population file, no served scores, ...)."""


def to_epoch(value: float | dt.datetime | str | None) -> float | None:
    """Seconds since the epoch from a number, a datetime or ISO 8601 text (naive = UTC)."""
    if value is None or isinstance(value, int | float):
        return None if value is None else float(value)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise MonitoringError(
                f"time {value!r} is not ISO 8601 (e.g. 2024-05-01T00:00)"
            ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def iso_time(ts: float | None) -> str:
    """ISO 8601 (UTC, seconds) for reports; "" for no time."""
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


_metadata = MetaData()
_scores = Table(
    "served_scores",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    Column("model_name", String(128), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("uscc", String(64), nullable=False),
    Column("probability_default", Double, nullable=False),
    Column("points", Double, nullable=False),
    Column("kind", String(8), nullable=False),
)
_indexes = (
    Index(
        "ix_served_scores_version_ts", _scores.c.model_name, _scores.c.model_version, _scores.c.ts
    ),
    Index("ix_served_scores_uscc", _scores.c.model_name, _scores.c.uscc, _scores.c.ts),
)


@dataclass(frozen=True)
class ServedScore:
    """One served score as stored."""

    ts: float
    model_name: str
    model_version: str
    uscc: str
    probability_default: float
    points: float
    kind: str


class ScoreLog(SqlStore):
    """The bank's log of served scores, in any SQLAlchemy database (SQLite file by default).

    Safe to share between threads; the node process appends while a CLI process reads.
    """

    LABEL = "score log"
    TABLES = (_scores,)
    INDEXES = _indexes
    FILE = "scores.db"

    def __init__(self, url: str):
        self._lock = threading.Lock()
        super().__init__(url)

    @classmethod
    def for_node_dir(cls, node_dir: Path) -> ScoreLog:
        """The log at ``NODE_DIR/scores.db``."""
        return cls(cls.node_dir_url(node_dir))

    @classmethod
    def for_config(cls, config: NodeConfig) -> ScoreLog:
        """``score_log_url`` of the node config if it has one, else ``XINYIDAI_SCORE_LOG_URL``,
        else ``NODE_DIR/scores.db``."""
        url = getattr(config, "score_log_url", None) or os.environ.get(SCORE_LOG_URL_ENV)
        return cls(url) if url else cls.for_node_dir(config.node_dir)

    def __repr__(self) -> str:
        return f"ScoreLog({self.url!r})"

    # -- writing -----------------------------------------------------------------------------
    def record(
        self,
        *,
        model_name: str,
        model_version: str,
        kind: str,
        usccs: Sequence[str],
        probability: Sequence[float],
        points: Sequence[float],
        ts: float | None = None,
    ) -> int:
        """Append one row per enterprise in one insert (one transaction); returns the count."""
        if kind not in KINDS:
            raise ValueError(f"score log kind must be one of {KINDS}, got {kind!r}")
        if not (len(usccs) == len(probability) == len(points)):
            raise ValueError("score log: usccs, probability and points differ in length")
        if not usccs:
            return 0
        stamp = time.time() if ts is None else float(ts)
        rows = [
            {
                "ts": stamp,
                "model_name": model_name,
                "model_version": model_version,
                "uscc": str(code),
                "probability_default": float(p),
                "points": float(s),
                "kind": kind,
            }
            for code, p, s in zip(usccs, probability, points, strict=True)
        ]
        with self._lock, self._engine.begin() as conn:
            conn.execute(insert(_scores), rows)
        return len(rows)

    def record_reply(self, reply: Any, *, kind: str) -> int:
        """Log what a ``ScoreReply`` (kind ``one``) or ``ScoreBatchReply`` (``batch``) served."""
        if kind == "one":
            if not reply.scored:
                return 0
            items = [(reply.uscc, reply.probability_default, reply.points)]
        else:
            items = [
                (e.uscc, e.probability_default, e.points)
                for e in reply.enterprises
                if e.status == "ok"
            ]
        if not items:
            return 0
        codes, probs, pts = zip(*items, strict=True)
        return self.record(
            model_name=reply.model_name,
            model_version=reply.model_version,
            kind=kind,
            usccs=list(codes),
            probability=list(probs),
            points=list(pts),
        )

    # -- reading -----------------------------------------------------------------------------
    def query(
        self,
        model_name: str,
        model_version: str | None = None,
        *,
        since: float | dt.datetime | str | None = None,
        until: float | dt.datetime | str | None = None,
        usccs: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """Served scores of ``model_name`` (one version or all), ``since <= ts < until``, oldest
        first, as a DataFrame with the ``ServedScore`` fields as columns."""
        stmt = select(_scores).where(_scores.c.model_name == model_name)
        if model_version is not None:
            stmt = stmt.where(_scores.c.model_version == model_version)
        lo, hi = to_epoch(since), to_epoch(until)
        if lo is not None:
            stmt = stmt.where(_scores.c.ts >= lo)
        if hi is not None:
            stmt = stmt.where(_scores.c.ts < hi)
        if usccs is not None:
            stmt = stmt.where(_scores.c.uscc.in_(list(usccs)))
        with self._engine.connect() as conn:
            rows = conn.execute(stmt.order_by(_scores.c.ts, _scores.c.id)).mappings().all()
        columns = [f.name for f in ServedScore.__dataclass_fields__.values()]
        return pd.DataFrame([{c: r[c] for c in columns} for r in rows], columns=columns)

    def latest(
        self, model_name: str, usccs: Iterable[str], *, before: float | None = None
    ) -> dict[str, ServedScore]:
        """Each enterprise's last served score of ``model_name`` (any version) before ``before``."""
        frame = self.query(model_name, until=before, usccs=usccs)
        last = frame.groupby("uscc", sort=False).tail(1)
        return {str(r["uscc"]): ServedScore(**r) for r in last.to_dict("records")}


def log_served(score_log: ScoreLog | None, reply: Any, *, kind: str, counts: Any) -> None:
    """The scoring service's hook: log a reply's scores; a failing log never fails the score
    (it is counted in the call's audit record as ``score_log_failed`` and logged)."""
    if score_log is None:
        return
    try:
        score_log.record_reply(reply, kind=kind)
    except SQLAlchemyError as exc:
        counts["score_log_failed"] = 1
        log.warning("score log %s: could not record served scores: %s", score_log.url, exc)
