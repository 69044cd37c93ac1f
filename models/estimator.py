"""What every bank-side estimator does with the bank's own DataFrame, once.

Why: ``SecureBoostClassifier`` and ``VerticalLogisticRegression`` take the bank's features as a
DataFrame, refuse non-numeric columns by name, and at scoring refuse columns that differ from
the fitted ones. Two copies of those checks had started to differ in wording; the mixin keeps
one rule and each estimator names its own error family.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pandas as pd

from federation.errors import XinyidaiError

__all__ = ["BankFrameMixin", "SchemaDriftError"]


class SchemaDriftError(XinyidaiError):
    """The columns given to predict differ from the ones the model was fitted on.

    Each model family subclasses it together with its own base error, so a caller may catch
    either this (any family) or the family's error.
    """


class BankFrameMixin:
    """The bank's DataFrame in, float64 out; the fitted columns checked at scoring.

    ``frame_error`` is the family's base error (bad input at fit); ``drift_error`` the family's
    ``SchemaDriftError`` (columns that do not match the fit).
    """

    frame_error: ClassVar[type[XinyidaiError]] = XinyidaiError
    drift_error: ClassVar[type[SchemaDriftError]] = SchemaDriftError

    def _numeric_frame(self, X: Any, what: str) -> pd.DataFrame:
        """The bank's features as float64, booleans as 0/1; other dtypes are refused by name."""
        if not isinstance(X, pd.DataFrame):
            raise self.frame_error(f"{what} must be a pandas DataFrame with named columns")
        out = {}
        for name in X.columns:
            col = X[name]
            if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
                out[str(name)] = pd.to_numeric(col, errors="raise").astype("Float64").astype(float)
            else:
                raise self.frame_error(
                    f"{what}: column '{name}' has dtype {col.dtype}; encode it as numbers first"
                )
        return pd.DataFrame(out, index=X.index)

    def _fitted_frame(self, X_bank: Any, fitted: Sequence[str]) -> pd.DataFrame:
        """``X_bank`` as float64 if its columns are exactly ``fitted``, in order; else drift."""
        if not isinstance(X_bank, pd.DataFrame):
            raise self.drift_error("X_bank must be a pandas DataFrame with the fitted columns")
        names = [str(c) for c in X_bank.columns]
        if len(names) != len(fitted):
            raise self.drift_error(
                f"X_bank has {len(names)} columns, the model was fitted on {len(fitted)}"
            )
        for k, (got, want) in enumerate(zip(names, fitted, strict=True)):
            if got != want:
                raise self.drift_error(
                    f"X_bank column {k} is '{got}', the model was fitted with '{want}' there"
                )
        return self._numeric_frame(X_bank, "X_bank")
