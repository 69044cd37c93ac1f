"""What each party may hold and share: one schema per role, written from the sharing lists.

A 信易贷 platform shares data item by item from published lists (共享清单): each item has a
Chinese name, a data category that an enterprise's authorisation covers (tax, electricity, ...)
and a sensitivity grade (数据分级). The schema is that list in code, so that a loader can refuse a
file that drifts from it, consent checks can map a column to the category an enterprise
authorised, and the documentation (docs/data.md) can be checked against the same source.

Grades used here: 1 public (registration data, published A-grade taxpayer lists), 2 internal
(aggregated usage levels, tenure), 3 sensitive (amounts, arrears, loan positions), 4 most
sensitive (credit history and the default label).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Literal

from federation.categories import CATEGORIES
from federation.errors import ConfigError

__all__ = [
    "BANK",
    "CATEGORIES",
    "DTYPES",
    "INDUSTRY_SECTIONS",
    "ROLES",
    "TAX",
    "UTILITY",
    "Column",
    "PartySchema",
    "generic_schema",
    "schema_for",
]

Dtype = Literal["str", "float", "int", "bool", "date", "category"]
DTYPES: tuple[str, ...] = ("str", "float", "int", "bool", "date", "category")

INDUSTRY_SECTIONS: dict[str, str] = {
    "A": "农、林、牧、渔业",
    "B": "采矿业",
    "C": "制造业",
    "D": "电力、热力、燃气及水生产和供应业",
    "E": "建筑业",
    "F": "批发和零售业",
    "G": "交通运输、仓储和邮政业",
    "H": "住宿和餐饮业",
    "I": "信息传输、软件和信息技术服务业",
    "J": "金融业",
    "K": "房地产业",
    "L": "租赁和商务服务业",
    "M": "科学研究和技术服务业",
    "N": "水利、环境和公共设施管理业",
    "O": "居民服务、修理和其他服务业",
    "P": "教育",
    "Q": "卫生和社会工作",
    "R": "文化、体育和娱乐业",
    "S": "公共管理、社会保障和社会组织",
    "T": "国际组织",
}
"""GB/T 4754-2017 sections (门类), the level at which industry is shared."""

TAX_CREDIT_GRADES: tuple[str, ...] = ("A", "B", "M", "C", "D")
"""纳税信用等级: A best ... D worst; M is given to new enterprises without a full year's record."""


@dataclass(frozen=True)
class Column:
    """One shared data item: its name, type, and the rules that govern its use."""

    name: str
    dtype: Dtype
    _: KW_ONLY
    required: bool = True
    label_zh: str = ""
    category: str = ""
    grade: int = 2
    allowed: tuple[str, ...] | None = None
    min_value: float | None = None
    # A nominal category that models use as a feature, split natively (docs/secureboost.md,
    # "Categorical features"). Off for the sharing lists' ``industry`` (not a model feature).
    categorical: bool = False

    def __post_init__(self) -> None:
        name, dtype, category = self.name, self.dtype, self.category
        grade, min_value = self.grade, self.min_value
        if self.allowed is not None:
            object.__setattr__(self, "allowed", tuple(self.allowed))
        if dtype not in DTYPES:
            raise ConfigError(f"column {name!r}: dtype {dtype!r} not one of {', '.join(DTYPES)}")
        if category not in CATEGORIES:
            raise ConfigError(
                f"column {name!r}: category {category!r} not one of {', '.join(CATEGORIES)}"
            )
        if grade not in (1, 2, 3, 4):
            raise ConfigError(f"column {name!r}: grade {grade} not in 1..4")
        if min_value is not None and dtype not in ("float", "int"):
            raise ConfigError(f"column {name!r}: min_value only applies to numbers")
        if self.categorical and dtype != "category":
            raise ConfigError(f"column {name!r}: categorical needs dtype 'category'")


@dataclass(frozen=True)
class PartySchema:
    """The columns one role holds; ``key`` names the USCC column that joins parties."""

    role: str
    columns: tuple[Column, ...]
    key: str = "uscc"
    # "uscc": keys are GB 32100 codes, normalised and check-character validated; "plain": row
    # ids of public benchmark data, each mapped to a valid code by ``uscc.from_plain_id`` (the
    # same id gives the same code at every party, so tables still align).
    key_kind: Literal["uscc", "plain"] = "uscc"
    # "refuse": a column the schema does not declare is schema drift; "ignore": a file shared by
    # several experiment parties (each reads its own columns of it).
    extra_columns: Literal["refuse", "ignore"] = "refuse"

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"schema {self.role!r}: duplicate columns {dupes}")
        if self.key not in names:
            raise ConfigError(f"schema {self.role!r}: key column {self.key!r} not declared")
        labels = [c.name for c in self.columns if c.category == "label"]
        if len(labels) > 1:
            raise ConfigError(f"schema {self.role!r}: more than one label column {labels}")

    @property
    def names(self) -> tuple[str, ...]:
        """All column names, key first, in schema order."""
        return tuple(c.name for c in self.columns)

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """Names of the columns a model may learn from (neither the key nor the label)."""
        return tuple(c.name for c in self.columns if c.name != self.key and c.category != "label")

    @property
    def categorical_features(self) -> tuple[str, ...]:
        """Feature columns that models treat as categories (codes, native splits, one-hot)."""
        return tuple(c.name for c in self.columns if c.categorical)

    @property
    def label_column(self) -> str | None:
        """Name of the label column, or ``None`` for parties that hold no labels."""
        return next((c.name for c in self.columns if c.category == "label"), None)

    @property
    def categories(self) -> tuple[str, ...]:
        """Data categories present in this table, in ``CATEGORIES`` order."""
        present = {c.category for c in self.columns}
        return tuple(c for c in CATEGORIES if c in present)

    def column(self, name: str) -> Column:
        """The column called ``name``; ``KeyError`` naming the known columns otherwise."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"no column {name!r} in the {self.role} schema; known: {self.names}")

    def columns_in(self, category: str) -> tuple[str, ...]:
        """Names of the columns that an authorisation for ``category`` releases."""
        return tuple(c.name for c in self.columns if c.category == category)


def _key() -> Column:
    return Column(
        "uscc", "str", label_zh="统一社会信用代码", category="identity", grade=1, required=True
    )


def _industry(category: str) -> Column:
    return Column(
        "industry",
        "category",
        label_zh="国民经济行业门类",
        category=category,
        grade=1,
        allowed=tuple(INDUSTRY_SECTIONS),
    )


def _money(name: str, zh: str, category: str, *, required: bool = True, grade: int = 3) -> Column:
    return Column(
        name, "float", label_zh=zh, category=category, grade=grade, required=required, min_value=0
    )


def _flag(name: str, zh: str, category: str, *, required: bool = True, grade: int = 3) -> Column:
    return Column(name, "bool", label_zh=zh, category=category, grade=grade, required=required)


TAX = PartySchema(
    role="tax",
    columns=(
        _key(),
        _industry("tax"),
        Column(
            "tax_credit_grade",
            "category",
            label_zh="纳税信用等级",
            category="tax",
            grade=2,
            allowed=TAX_CREDIT_GRADES,
        ),
        _flag("abnormal_taxpayer", "是否非正常户", "tax"),
        _flag("in_tax_arrears", "当前是否欠税", "tax"),
        _money("tax_arrears_amount", "欠税金额", "tax"),
        _money("vat_payable_12m", "近一年增值税应纳税额", "tax"),
        _money("vat_paid_12m", "近一年增值税实缴", "tax"),
        # No annual CIT settlement yet for enterprises younger than a year: may be missing.
        _money("cit_payable_12m", "近一年企业所得税应纳税额", "tax", required=False),
        _money("cit_paid_12m", "近一年企业所得税实缴", "tax", required=False),
        Column(
            "consecutive_normal_months",
            "int",
            label_zh="连续正常缴税月数",
            category="tax",
            grade=2,
            min_value=0,
        ),
        # Missing for enterprises that have never made a normal payment.
        Column(
            "last_normal_payment_date",
            "date",
            label_zh="最近一次正常缴税日期",
            category="tax",
            grade=2,
            required=False,
        ),
    ),
)

UTILITY = PartySchema(
    role="utility",
    columns=(
        _key(),
        # Every premises has electricity; averages over 6/12 months are missing for
        # connections younger than that.
        _money("elec_avg_amount_3m", "近3个月月均用电金额", "electricity", grade=2),
        _money("elec_avg_amount_6m", "近6个月月均用电金额", "electricity", grade=2, required=False),
        _money(
            "elec_avg_amount_12m", "近12个月月均用电金额", "electricity", grade=2, required=False
        ),
        _flag("elec_in_arrears", "当前是否欠费(电)", "electricity"),
        # Water and gas: missing without a separate meter / without a gas connection.
        _money("water_avg_volume_3m", "近3个月月均用水量", "water", grade=2, required=False),
        _money("water_avg_volume_6m", "近6个月月均用水量", "water", grade=2, required=False),
        _flag("water_in_arrears", "当前是否欠费(水)", "water", required=False),
        _money("gas_avg_volume_3m", "近3个月月均用气量", "gas", grade=2, required=False),
        _money("gas_avg_volume_6m", "近6个月月均用气量", "gas", grade=2, required=False),
        _flag("gas_in_arrears", "当前是否欠费(气)", "gas", required=False),
    ),
)

BANK = PartySchema(
    role="bank",
    columns=(
        _key(),
        Column(
            "account_age_months",
            "int",
            label_zh="开户月数",
            category="bank",
            grade=2,
            min_value=0,
        ),
        Column(
            "existing_loans", "int", label_zh="现有贷款笔数", category="bank", grade=3, min_value=0
        ),
        _money("existing_loan_balance", "现有贷款余额", "bank"),
        Column(
            "overdue_count_24m",
            "int",
            label_zh="近24个月逾期次数",
            category="bank",
            grade=4,
            min_value=0,
        ),
        _money("requested_amount", "申请金额", "bank"),
        _industry("bank"),
        # Missing for applicants still inside their 12-month observation window, so the
        # same schema serves training (labelled rows) and scoring (unlabelled rows).
        Column(
            "default_12m",
            "bool",
            label_zh="12个月内是否违约",
            category="label",
            grade=4,
            required=False,
        ),
    ),
)

ROLES: dict[str, PartySchema] = {"bank": BANK, "tax": TAX, "utility": UTILITY}


def schema_for(role: str) -> PartySchema:
    """The schema of ``role`` ('bank', 'tax' or 'utility')."""
    try:
        return ROLES[role]
    except KeyError:
        raise ConfigError(f"unknown role {role!r}; allowed roles: {', '.join(ROLES)}") from None


def generic_schema(
    role: str,
    *,
    id_column: str,
    id_kind: Literal["uscc", "plain"],
    features: tuple[str, ...] | list[str],
    label_column: str | None = None,
    category: str = "bank",
    categorical: Sequence[str] = (),
) -> PartySchema:
    """A schema for an experiment's table: a key, features and maybe a label.

    Why: public benchmark files (``default_credit``...) do not follow the sharing lists; an
    experiment names each party's key, label and feature columns instead, and every feature is
    a number of one data category (the one an enterprise's authorisation would cover), except
    the ``categorical`` ones (text or codes, encoded by ``parties.data.encoding``).
    """
    unknown = [c for c in categorical if c not in features]
    if unknown:
        raise ConfigError(
            f"table '{role}': categorical column(s) {', '.join(map(repr, unknown))} "
            "are not features"
        )
    if id_column in features or (label_column is not None and label_column in features):
        raise ConfigError(f"table '{role}': the key and the label cannot also be features")
    if category not in CATEGORIES or category in ("identity", "label"):
        raise ConfigError(f"table '{role}': category {category!r} is not a data category")
    # Values may be missing (a bin of their own; an unlabelled row is not yet observed); that
    # the columns exist at all is checked against the file's header by the node's config.
    columns = [Column(id_column, "str", category="identity", grade=1)]
    if label_column is not None:
        columns.append(Column(label_column, "float", category="label", grade=4, required=False))
    nominal = set(categorical)
    columns += [
        Column(f, "category", category=category, grade=3, required=False, categorical=True)
        if f in nominal
        else Column(f, "float", category=category, grade=3, required=False)
        for f in features
    ]
    return PartySchema(
        role, tuple(columns), key=id_column, key_kind=id_kind, extra_columns="ignore"
    )
