"""Post-loan monitoring (贷后监测) at the bank: served-score log, PSI and a watch list.

Why at the bank: every score it serves is the bank's own output (probability of default and
points for an enterprise that authorised the bank); keeping them lets it see, without asking any
holder again, whether the population it scores still looks like the one the model was trained on,
and whether enterprises it already lends to are getting riskier. Nothing here crosses to a holder
except the re-scoring itself, which is an ordinary ``Bank.ScoreBatch`` (every holder checks the
enterprise's authorisation and purpose as for any score).

- ``parties.bank.score_log.ScoreLog``: every served score (what the two checks below read).
- ``write_training_population`` / ``read_training_population``: the training population's
  scores (every labelled aligned row, train and test split) that ``train_secureboost`` saves as
  ``NODE_DIR/models/<job>.population.json``: the "expected" side of the PSI.
- ``population_stability``: PSI of the served points of one model version in a time window
  against its training population (``models.metrics.psi_table``). Labels (the usual rule of
  thumb): PSI < 0.1 ``stable``, 0.1-0.25 ``watch``, > 0.25 ``shift``.
- ``rescore_watchlist``: re-scores a list of enterprises through the bank node, compares each
  with its previous served score under the same model name (any version) and alerts on drops of
  more than a threshold in points, and on enterprises that can no longer be scored; each alert is
  an audit record ``monitor.alert`` (subject = USCC).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from federation.audit import AuditLog
from federation.files import write_atomic
from federation.transport.base import PeerBase, new_meta
from models.metrics import MetricError, psi_table
from models.scorecard import PdoScaling
from parties.bank.score_log import MonitoringError, ScoreLog, iso_time, to_epoch
from protos import bank_pb2

if TYPE_CHECKING:
    from parties.bank.registry import TrackingConfig
    from parties.config import NodeConfig

LOCAL_VERSION = "local"  # as parties.bank.served.LOCAL_VERSION (a job served without registry)
POPULATION_FORMAT = "xinyidai.population.v1"
STABLE, WATCH = 0.1, 0.25
ALERT_OPERATION = "monitor.alert"


def psi_label(value: float) -> str:
    """``stable`` (< 0.1), ``watch`` (0.1-0.25) or ``shift`` (> 0.25)."""
    if value < STABLE:
        return "stable"
    return "watch" if value <= WATCH else "shift"


# -------------------------------------------------------------------------------------------
# the training population (the expected side of PSI)


def population_path(models_dir: Path, job_id: str) -> Path:
    return Path(models_dir) / f"{job_id}.population.json"


def write_training_population(
    models_dir: Path, job_id: str, margins: np.ndarray, *, split: Sequence[str]
) -> Path:
    """Save the training population's probabilities and points (``split``: train/test per row)."""
    margins = np.asarray(margins, dtype=np.float64)
    points = PdoScaling().score(margins)
    payload = {
        "format": POPULATION_FORMAT,
        "job_id": job_id,
        "n": int(margins.size),
        "n_train": int(sum(s == "train" for s in split)),
        "n_test": int(sum(s == "test" for s in split)),
        "probability_default": (1.0 / (1.0 + np.exp(-margins))).tolist(),
        "points": points.tolist(),
    }
    path = population_path(models_dir, job_id)
    write_atomic(path, json.dumps(payload).encode("utf-8"))
    return path


def read_training_population(models_dir: Path, job_id: str, *, model: str = "") -> np.ndarray:
    """Points of the training population of ``job_id``."""
    path = population_path(models_dir, job_id)
    what = f"model {model} (job '{job_id}')" if model else f"job '{job_id}'"
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise MonitoringError(
            f"{what}: no training population at {path} (trained before monitoring existed? "
            "retrain, or score a reference population and compare windows)"
        ) from None
    except (OSError, ValueError) as exc:
        raise MonitoringError(f"{what}: cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != POPULATION_FORMAT:
        raise MonitoringError(f"{what}: {path} is not a {POPULATION_FORMAT} file")
    points = np.asarray(data.get("points", []), dtype=np.float64)
    if points.size == 0 or not np.isfinite(points).all():
        raise MonitoringError(f"{what}: {path} holds no usable points")
    return points


# -------------------------------------------------------------------------------------------
# population stability


@dataclass
class PsiReport:
    """PSI of one model version's served points in a window against its training population."""

    model_name: str
    model_version: str
    job_id: str
    psi: float
    label: str
    n_expected: int
    n_actual: int  # enterprises in the window (each counted once: its latest score)
    n_served: int  # served scores in the window (an enterprise scored twice counts twice)
    since: str
    until: str
    bins: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for row in out["bins"]:
            for key in ("lower", "upper"):
                if not math.isfinite(row[key]):
                    row[key] = None  # JSON has no infinity
        return out


def _job_of(
    model_name: str, version: str, models_dir: Path, tracking: TrackingConfig | None
) -> tuple[str, str]:
    """(resolved version, job id) of a registered version/alias, or of a local job."""
    if version in ("", LOCAL_VERSION):
        return LOCAL_VERSION, model_name
    from parties.bank.registry import TAG_JOB_ID, TrackingError, resolve

    try:
        resolved = resolve(model_name, version, tracking=tracking)
    except TrackingError as exc:
        raise MonitoringError(str(exc)) from None
    job_id = resolved.tags.get(TAG_JOB_ID, "")
    if not job_id:
        raise MonitoringError(f"model {model_name}/{resolved.version} records no job id")
    return resolved.version, job_id


def population_stability(
    source: Path | NodeConfig,
    model_name: str,
    version: str,
    *,
    since: float | dt.datetime | str | None = None,
    until: float | dt.datetime | str | None = None,
    bins: int = 10,
    score_log: ScoreLog | None = None,
    tracking: TrackingConfig | None = None,
) -> PsiReport:
    """PSI of the points ``model_name``/``version`` served in ``[since, until)`` against the
    training population saved at training (``NODE_DIR/models/<job>.population.json``).

    ``source``: the bank's node directory or node config. ``version``: a version number, an
    alias (resolved in the registry) or ``local`` for a job served without registry. Each
    enterprise counts once (its latest score in the window), so re-scoring one enterprise many
    times does not move the index. Bins: ``bins`` quantile bins of the training population.
    """
    node_dir = Path(source) if isinstance(source, str | Path) else source.node_dir
    resolved, job_id = _job_of(model_name, str(version).strip(), node_dir / "models", tracking)
    model = f"{model_name}/{resolved}"
    expected = read_training_population(node_dir / "models", job_id, model=model)
    own = score_log is None
    logbook = score_log
    if logbook is None:
        logbook = (
            ScoreLog.for_node_dir(node_dir)
            if isinstance(source, str | Path)
            else ScoreLog.for_config(source)
        )
    try:
        served = logbook.query(model_name, resolved, since=since, until=until)
    finally:
        if own:
            logbook.close()
    lo, hi = to_epoch(since), to_epoch(until)
    window = f"{iso_time(lo) or 'the beginning'} .. {iso_time(hi) or 'now'}"
    if served.empty:
        raise MonitoringError(f"model {model}: no served scores in the score log for {window}")
    actual = served.groupby("uscc", sort=False)["points"].last().to_numpy()
    try:
        table = psi_table(expected, actual, bins=bins)
    except MetricError as exc:
        raise MonitoringError(f"model {model}: {exc}") from None
    value = float(table["psi"].sum())
    return PsiReport(
        model_name=model_name,
        model_version=resolved,
        job_id=job_id,
        psi=value,
        label=psi_label(value),
        n_expected=int(expected.size),
        n_actual=int(actual.size),
        n_served=len(served),
        since=iso_time(lo),
        until=iso_time(hi),
        bins=[
            {k: (int(v) if k.endswith("count") or k == "bin" else float(v)) for k, v in row.items()}
            for row in table.to_dict("records")
        ],
    )


# -------------------------------------------------------------------------------------------
# the watch list


@dataclass
class WatchItem:
    """One enterprise of a watch list after re-scoring."""

    uscc: str
    status: str  # "ok" or "<source>:<reason>" as ScoreBatch reports it
    points: float | None
    probability_default: float | None
    previous_points: float | None
    previous_version: str | None
    previous_at: str
    change: float | None  # points now minus points before (negative: riskier)
    alert: str  # "" | "drop" | "unscorable"


@dataclass
class WatchReport:
    model_name: str
    model_version: str
    drop_threshold_points: float
    items: list[WatchItem]

    @property
    def alerts(self) -> list[WatchItem]:
        return [i for i in self.items if i.alert]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "drop_threshold_points": self.drop_threshold_points,
            "alerts": [asdict(i) for i in self.alerts],
            "items": [asdict(i) for i in self.items],
        }


def parse_model(model: str) -> tuple[str, str]:
    """``NAME@ALIAS`` / ``NAME:VERSION`` / ``NAME`` (champion) -> (name, alias or version)."""
    model = model.strip()
    for sep in ("@", ":"):
        if sep in model:
            name, ref = model.split(sep, 1)
            if name and ref:
                return name, ref
            raise MonitoringError(f"model {model!r}: expected NAME@ALIAS or NAME:VERSION")
    if not model:
        raise MonitoringError("a model is required (NAME, NAME@ALIAS or NAME:VERSION)")
    return model, "champion"


def rescore_watchlist(
    client: PeerBase,
    model: str | tuple[str, str],
    codes: Sequence[str],
    *,
    drop_threshold_points: float,
    score_log: ScoreLog,
    audit: AuditLog | None = None,
    purpose: str = "financing",
) -> WatchReport:
    """Re-score ``codes`` through the bank node (``client``: an operator client of its ``Bank``
    service) with ``model`` and compare each with its previous served score of the same model
    name (any version) in ``score_log``.

    Alerts: ``drop`` when points fell by more than ``drop_threshold_points``; ``unscorable``
    when the enterprise was scored before but no longer is (consent revoked or expired, data
    gone, disputed: the status names the source and reason). An enterprise never scored before
    and not scorable now is reported with its status but raises no alert (nothing was lent on
    its score). Each alert is appended to ``audit`` as ``monitor.alert`` with subject = USCC.
    """
    if not (math.isfinite(drop_threshold_points) and drop_threshold_points >= 0):
        raise MonitoringError(f"drop threshold must be >= 0 points, got {drop_threshold_points}")
    name, ref = parse_model(model) if isinstance(model, str) else model
    wanted = [str(c).strip() for c in codes if str(c).strip()]
    if not wanted:
        raise MonitoringError("the watch list is empty")
    # Read "before" first: the re-scoring below is itself a served score and gets logged.
    previous = score_log.latest(name, wanted, before=time.time())
    reply = client.call(
        "ScoreBatch",
        bank_pb2.ScoreBatchRequest(
            meta=new_meta(purpose, model_id=f"{name}/{ref}"),
            model_name=name,
            model_ref=ref,
            usccs=wanted,
        ),
    )
    items: list[WatchItem] = []
    for e in reply.enterprises:
        before = previous.get(e.uscc)
        ok = e.status == "ok"
        change = (e.points - before.points) if ok and before is not None else None
        alert = ""
        if ok and change is not None and -change > drop_threshold_points:
            alert = "drop"
        elif not ok and before is not None:
            alert = "unscorable"
        items.append(
            WatchItem(
                uscc=e.uscc,
                status=e.status,
                points=float(e.points) if ok else None,
                probability_default=float(e.probability_default) if ok else None,
                previous_points=None if before is None else before.points,
                previous_version=None if before is None else before.model_version,
                previous_at=iso_time(None if before is None else before.ts),
                change=change,
                alert=alert,
            )
        )
    report = WatchReport(name, reply.model_version, float(drop_threshold_points), items)
    if audit is not None:
        for item in report.alerts:
            _audit_alert(audit, report, item)
    return report


def _audit_alert(audit: AuditLog, report: WatchReport, item: WatchItem) -> None:
    if item.alert == "drop":
        reason = (
            f"points fell {-(item.change or 0.0):.1f} (> {report.drop_threshold_points:g}): "
            f"{item.previous_points:.1f} under version {item.previous_version} at "
            f"{item.previous_at} -> {item.points:.1f} under version {report.model_version}"
        )
    else:
        reason = (
            f"no longer scorable ({item.status}); last scored {item.previous_points:.1f} under "
            f"version {item.previous_version} at {item.previous_at}"
        )
    audit.append(
        direction="local",
        peer=audit.node_id,
        operation=ALERT_OPERATION,
        purpose="monitoring",
        model_id=f"{report.model_name}/{report.model_version}"[:128],
        subject=item.uscc[:64],
        decision=item.alert,
        reason=reason,
    )


def read_watchlist(path: Path) -> list[str]:
    """One USCC per line; blank lines and ``#`` comments ignored."""
    try:
        lines = Path(path).read_text("utf-8").splitlines()
    except OSError as exc:
        raise MonitoringError(f"watch list {path}: cannot read: {exc.strerror}") from None
    codes = [line.split("#", 1)[0].strip() for line in lines]
    return [c for c in codes if c]


__all__ = [
    "ALERT_OPERATION",
    "PsiReport",
    "WatchItem",
    "WatchReport",
    "parse_model",
    "population_stability",
    "psi_label",
    "read_training_population",
    "read_watchlist",
    "rescore_watchlist",
    "write_training_population",
]
