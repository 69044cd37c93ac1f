"""Writing to the model registry: a new version per training job, and promotion to champion.

Why apart from the read side (``parties.bank.registry``: ``resolve``, the tags): the bank node
only ever reads the registry when it serves a score; creating versions and moving ``champion``
are the operator's acts, done here, each recorded on the version and in the model's history.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from parties.bank.registry import (
    ALIAS_CHALLENGER,
    ALIAS_CHAMPION,
    PROMOTE_OPERATION,
    TAG_BANK_PART,
    TAG_JOB_ID,
    TAG_MODEL_NAME,
    TAG_PROMOTED_AT,
    TAG_PROMOTED_BY,
    TAG_PROMOTION_REASON,
    TAG_PROMOTIONS,
    TAG_PROTOCOL,
    TrackingConfig,
    TrackingError,
    check_model_name,
    config_or_default,
    fluent,
    get_version,
    is_mlflow_code,
    mlflow_client,
    model_id,
    resolve,
)
from xinyidai.tracking.pyfunc import PYFUNC_NAME, log_pyfunc

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from federation.audit import AuditLog
    from xinyidai.tracking.record import TrainingRecord

_PROMOTIONS_MAX_CHARS = 90_000  # under MLflow's 100 000-character registry tag limit


def register_version(
    client: MlflowClient,
    config: TrackingConfig,
    experiment_id: str,
    run_id: str,
    record: TrainingRecord,
) -> str:
    """New version of ``record.model_name`` holding the bank's pyfunc; alias ``challenger``.

    The version is created first (on a pending MLflow logged model), so the pyfunc's artifacts
    can name the version they belong to - the scoring service is asked for (name, version) -
    and the artifacts are written once. ``mlflow.pyfunc.log_model`` has no run id argument (it
    uses the thread's active run); ``Model.log``, which it wraps, takes one explicitly.
    """
    from mlflow.exceptions import MlflowException

    name = record.model_name
    with fluent(config) as mlflow:
        try:
            client.create_registered_model(
                name,
                tags={"xinyidai.protocol": record.protocol},
                description=f"xinyidai {record.protocol} credit model (bank part as pyfunc)",
            )
        except MlflowException as exc:
            if not is_mlflow_code(exc, "RESOURCE_ALREADY_EXISTS"):
                raise
        logged = client.create_logged_model(
            experiment_id,
            name=PYFUNC_NAME,
            source_run_id=run_id,
            tags={TAG_JOB_ID: record.job_id, TAG_MODEL_NAME: name},
        )
        version_tags = {
            TAG_JOB_ID: record.job_id,
            TAG_PROTOCOL: record.protocol,
            TAG_BANK_PART: record.bank_part_sha256,
            **{f"xinyidai.part.{h}.sha256": d for h, d in sorted(record.holder_parts.items())},
        }
        mv = client.create_model_version(
            name,
            source=f"models:/{logged.model_id}",
            run_id=run_id,
            tags=version_tags,
            model_id=logged.model_id,
        )
        version = str(mv.version)
        try:
            log_pyfunc(mlflow, run_id, logged.model_id, record, version)
        except BaseException:
            try:  # leave no version without a model behind it
                client.delete_model_version(name, version)
                client.finalize_logged_model(logged.model_id, "FAILED")
            except MlflowException:
                pass
            raise
        client.set_registered_model_alias(name, ALIAS_CHALLENGER, version)
    return version


@dataclass(frozen=True)
class Promotion:
    """One move of ``champion``: to ``version`` from ``previous`` (None: first champion)."""

    version: str
    previous: str | None
    by: str
    at: str  # ISO 8601, UTC
    reason: str = ""


_PROMOTE_LOCK = threading.Lock()


def promote(
    name: str,
    version: str | int,
    *,
    by: str,
    reason: str = "",
    tracking: TrackingConfig | None = None,
    audit: AuditLog | None = None,
) -> str | None:
    """Move alias ``champion`` of ``name`` to ``version``; record who, when and why on the
    version (tags) and in the model's ``xinyidai.promotions`` history; return the previous
    champion's version (None if there was none). Refuses a version that does not exist.

    ``audit``: the bank's audit log, to keep the promotion on record there too.
    """
    from mlflow.exceptions import MlflowException

    who = by.strip()
    if not who:
        raise TrackingError("promote: say who promotes (--by)")
    client = mlflow_client(config_or_default(tracking))
    mv = get_version(client, name, version)
    target = str(mv.version)
    with _PROMOTE_LOCK:
        try:
            previous: str | None = str(
                client.get_model_version_by_alias(name, ALIAS_CHAMPION).version
            )
        except MlflowException as exc:
            if not is_mlflow_code(exc, "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            previous = None
        at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        client.set_registered_model_alias(name, ALIAS_CHAMPION, target)
        client.set_model_version_tag(name, target, TAG_PROMOTED_BY, who)
        client.set_model_version_tag(name, target, TAG_PROMOTED_AT, at)
        client.set_model_version_tag(name, target, TAG_PROMOTION_REASON, reason)
        history = promotion_history(name, client=client)
        history.append(Promotion(target, previous, who, at, reason))
        entries = [dataclasses.asdict(p) for p in history]
        text = json.dumps(entries, ensure_ascii=False)
        while len(text) > _PROMOTIONS_MAX_CHARS and len(entries) > 1:
            entries.pop(0)  # the oldest; each version still carries its own promotion tags
            text = json.dumps(entries, ensure_ascii=False)
        client.set_registered_model_tag(name, TAG_PROMOTIONS, text)
    if audit is not None:
        audit.append(
            direction="local",
            peer=audit.node_id,
            operation=PROMOTE_OPERATION,
            model_id=model_id(name, target)[:128],
            reason=f"by {who}; previous champion: {previous or 'none'}; {reason}"[:2000],
        )
    return previous


def promotion_history(
    name: str, *, tracking: TrackingConfig | None = None, client: MlflowClient | None = None
) -> list[Promotion]:
    """Every promotion of ``name``, oldest first (empty if never promoted)."""
    from mlflow.exceptions import MlflowException

    check_model_name(name)
    client = client or mlflow_client(config_or_default(tracking))
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if is_mlflow_code(exc, "RESOURCE_DOES_NOT_EXIST"):
            raise TrackingError(f"no registered model '{name}'") from None
        raise
    raw = (model.tags or {}).get(TAG_PROMOTIONS)
    if not raw:
        return []
    try:
        entries = json.loads(raw)
        return [
            Promotion(
                version=str(e["version"]),
                previous=None if e.get("previous") is None else str(e["previous"]),
                by=str(e.get("by", "")),
                at=str(e.get("at", "")),
                reason=str(e.get("reason", "")),
            )
            for e in entries
        ]
    except (ValueError, TypeError, KeyError) as exc:
        raise TrackingError(f"model '{name}': promotion history tag is damaged ({exc})") from None


def list_models(*, tracking: TrackingConfig | None = None) -> list[dict[str, Any]]:
    """Every registered model: name, latest version, aliases (alias -> version), description."""
    client = mlflow_client(config_or_default(tracking))
    out: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = client.search_registered_models(max_results=100, page_token=token)
        for rm in page:
            versions = client.search_model_versions(f"name='{rm.name}'", max_results=1000)
            numbers = sorted(int(v.version) for v in versions)
            out.append(
                {
                    "name": rm.name,
                    "latest_version": str(numbers[-1]) if numbers else "",
                    "versions": len(numbers),
                    "aliases": {k: str(v) for k, v in sorted((rm.aliases or {}).items())},
                    "description": rm.description or "",
                }
            )
        token = page.token
        if not token:
            break
    return sorted(out, key=lambda m: m["name"])


def describe_version(
    name: str, alias_or_version: str | int, *, tracking: TrackingConfig | None = None
) -> dict[str, Any]:
    """One version as the operator sees it: aliases, status, run, tags, params, final metrics."""
    config = config_or_default(tracking)
    resolved = resolve(name, alias_or_version, tracking=config)
    client = mlflow_client(config)
    mv = client.get_model_version(name, resolved.version)
    aliases = sorted(
        a
        for a, v in (client.get_registered_model(name).aliases or {}).items()
        if str(v) == resolved.version
    )
    out: dict[str, Any] = {
        "name": name,
        "version": resolved.version,
        "aliases": aliases,
        "status": str(mv.status),
        "created": _iso_ms(mv.creation_timestamp),
        "source": mv.source,
        "run_id": resolved.run_id,
        "tags": dict(sorted(resolved.tags.items())),
        "run_tags": {},
        "params": {},
        "metrics": {},
    }
    if resolved.run_id:
        run = client.get_run(resolved.run_id)
        out["run_tags"] = {
            k: v for k, v in sorted(run.data.tags.items()) if k.startswith("xinyidai.")
        }
        out["params"] = dict(sorted(run.data.params.items()))
        out["metrics"] = dict(sorted(run.data.metrics.items()))
    return out


def _iso_ms(ms: int | None) -> str:
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")
