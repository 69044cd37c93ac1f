"""The registered pyfunc: the bank's model part, scored through the bank's live scoring service.

Why a "model from code" and not a pickle: the artifact is a three-line script importing
``BankScoringModel`` plus JSON (the bank model, how to reach the scoring service, the part
digests), so loading a version runs no stored bytecode. ``predict`` sends the codes to the bank
node's ``Score`` service (``parties.bank.scoring.score_codes``), where every holder checks the
enterprise's consent: the pyfunc cannot score around it.

``BankScoringModel`` subclasses MLflow's ``PythonModel``, so it is built on first access: importing
this package must not import MLflow (seconds).
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parties.bank.registry import (
    ALIAS_CHAMPION,
    TrackingConfig,
    TrackingError,
    config_or_default,
    fluent,
    import_mlflow,
    resolve,
)

if TYPE_CHECKING:
    from xinyidai.tracking.record import TrainingRecord

PYFUNC_NAME = "bank-model"
SCORING_MODULE = "parties.bank.scoring"
PUBLIC_MODULE = "xinyidai.tracking"
"""Where the entry script imports ``BankScoringModel`` from (registered versions name it)."""

_PYFUNC_ENTRY = '''"""Models-from-code entry point of the bank's scoring pyfunc (xinyidai/tracking/pyfunc.py)."""

import mlflow

from xinyidai.tracking import BankScoringModel

mlflow.models.set_model(BankScoringModel())
'''


def log_pyfunc(
    mlflow: Any, run_id: str, logged_id: str, record: TrainingRecord, version: str
) -> None:
    """Write the pyfunc (entry script + JSON artifacts) onto the logged model ``logged_id``."""
    import warnings

    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema

    with tempfile.TemporaryDirectory(prefix="xinyidai-pyfunc-") as tmp:
        base = Path(tmp)
        entry = base / "bank_scoring_model.py"
        entry.write_text(_PYFUNC_ENTRY, encoding="utf-8")
        (base / "bank_model.json").write_text(record.bank_model_json, encoding="utf-8")
        scoring = {
            "format": "xinyidai.scoring/1",
            "model_name": record.model_name,
            "version": version,
            "job_id": record.job_id,
            "run_id": run_id,
            "bank_model_sha256": record.bank_part_sha256,
            "endpoint": dict(record.scoring_endpoint),
        }
        (base / "scoring.json").write_text(json.dumps(scoring, indent=1), encoding="utf-8")
        parts = json.dumps(record.parts_manifest(), indent=1)
        (base / "parts.json").write_text(parts, encoding="utf-8")
        with warnings.catch_warnings():
            # No input example on purpose: it would call the live scoring service at logging.
            warnings.filterwarnings("ignore", message=".*input example.*", category=UserWarning)
            Model.log(
                artifact_path=None,
                name=PYFUNC_NAME,
                flavor=mlflow.pyfunc,
                flavor_name="pyfunc.ModelFromCode",
                run_id=run_id,
                model_id=logged_id,
                python_model=str(entry),
                artifacts={
                    "bank_model": str(base / "bank_model.json"),
                    "scoring": str(base / "scoring.json"),
                    "parts": str(base / "parts.json"),
                },
                signature=ModelSignature(inputs=Schema([ColSpec("string", "uscc")])),
                # Explicit, so MLflow does not load the model to infer them. The xinyidai
                # package itself is not listed: it is not on PyPI; load the model in the
                # bank's environment (env_manager="local").
                pip_requirements=[f"mlflow=={mlflow.__version__}", "pandas"],
                await_registration_for=0,
            )


def _load_context(self: Any, context: Any) -> None:
    """Read the bank model JSON and refuse it unless it matches the digest of the version."""
    text = Path(context.artifacts["bank_model"]).read_text(encoding="utf-8")
    self.scoring = json.loads(Path(context.artifacts["scoring"]).read_text("utf-8"))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    expected = self.scoring.get("bank_model_sha256")
    if digest != expected:
        raise TrackingError(
            f"model {self.scoring.get('model_name')}/{self.scoring.get('version')}: "
            f"bank model artifact sha256 {digest[:16]}… does not match the recorded "
            f"{str(expected)[:16]}…"
        )
    self.bank_model = json.loads(text)
    self.bank_model_sha256 = digest


def _predict(self: Any, context: Any, model_input: Any, params: Any = None) -> Any:
    """Score each ``uscc`` through the bank node's ``Score`` service (never locally)."""
    import pandas as pd

    if not isinstance(model_input, pd.DataFrame) or "uscc" not in model_input.columns:
        raise TrackingError("scoring input must be a DataFrame with a 'uscc' column")
    codes = [str(c).strip() for c in model_input["uscc"].tolist()]
    try:
        # At predict time, so a version loads (and can be inspected) off the bank's host.
        from parties.bank.scoring import score_codes
    except ImportError as exc:
        raise TrackingError(
            f"the bank's scoring service is not available here ({SCORING_MODULE}: "
            f"{exc}); score on the bank's host"
        ) from None
    scores = score_codes(
        dict(self.scoring.get("endpoint") or {}),
        str(self.scoring["model_name"]),
        str(self.scoring["version"]),
        codes,
    )
    if not isinstance(scores, pd.DataFrame) or len(scores) != len(codes):
        raise TrackingError(
            f"{SCORING_MODULE}.score_codes must return a DataFrame with one row per "
            f"code ({len(codes)}), got {type(scores).__name__}"
        )
    return scores


_DOC = """The registered bank part: ``predict(df)`` with a ``uscc`` column scores each code
    through ``parties.bank.scoring.score_codes(endpoint, model_name, version, codes)`` (the bank
    node's ``Score`` service, where holders check each enterprise's consent).

    ``load_context`` reads the bank model JSON and checks it against the sha256 recorded with
    the version; the scoring module is imported at predict time, so a model loads (and can be
    inspected) where the scoring service is not installed.
    """


@functools.cache
def bank_scoring_model_class() -> type:
    """``BankScoringModel``, built on first use so that importing tracking does not import
    MLflow."""
    import pandas as pd

    mlflow = import_mlflow()
    # Real (not string) annotations, set before the class exists: MLflow reads ``predict``'s
    # type hints when the subclass is created; a DataFrame hint means "no type-hint validation,
    # use the signature" (string hints would not resolve here and draw a warning).
    _predict.__annotations__ = {
        "context": Any,
        "model_input": pd.DataFrame,
        "params": Any,
        "return": pd.DataFrame,
    }
    namespace: dict[str, Any] = {
        "__doc__": _DOC,
        "__module__": PUBLIC_MODULE,
        "load_context": _load_context,
        "predict": _predict,
    }
    return type("BankScoringModel", (mlflow.pyfunc.PythonModel,), namespace)


def load_scoring_model(
    name: str,
    alias_or_version: str | int = ALIAS_CHAMPION,
    *,
    tracking: TrackingConfig | None = None,
) -> Any:
    """``mlflow.pyfunc.load_model("models:/<name>@<alias>")`` against ``tracking``."""
    config = config_or_default(tracking)
    resolved = resolve(name, alias_or_version, tracking=config)
    with fluent(config) as mlflow:
        return mlflow.pyfunc.load_model(f"models:/{name}/{resolved.version}")
