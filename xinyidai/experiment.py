"""``xinyidai experiment run CONFIG --out RESULT.json``: one federated experiment, end to end.

A data scientist's experiment is one YAML file (validated here with pydantic): each party's file,
key column and features, the bank's label, the train/test split, the model and the crypto. The
runner makes a throwaway federation for it on this machine — a development PKI and one node
directory per party, every node a separate OS process serving mutual-TLS gRPC on loopback —
then, as the bank's operator, aligns the parties by PSI, trains across the processes, scores
the test rows in one round and compares with a bank-only and a centralised model.

The centralised comparison is the one step outside the federation: the runner reads every
party's file itself, which only a benchmark on public data may do (in production no one can).
Node files are read in place (``path`` relative to the config file), never copied.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from federation.errors import ConfigError
from federation.files import write_atomic
from parties.config import is_node_id, validate_yaml

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PartyConfig(_Strict):
    """One party's table: the file, its key, and which columns take part — or, with
    ``schema_role``, a table of the platform's sharing lists (keyed by USCC, e.g. a synthetic
    city from ``xinyidai data synth``), whose model features the schema defines."""

    path: Path
    schema_role: Literal["bank", "tax", "utility"] | None = None
    id_column: str = "uscc"
    id_kind: Literal["uscc", "plain"] = "uscc"
    features: list[str] | None = Field(
        default=None, description="feature columns; default every column but the key and label"
    )
    category: str = Field(default="tax", description="data category of a holder's features")


class BankPartyConfig(PartyConfig):
    label_column: str = "default_12m"
    category: str = "bank"


class SplitConfig(_Strict):
    """``id_mod``: test rows are those whose integer id % modulus == remainder (benchmarks);
    ``stratified``: a seeded stratified split of the aligned, labelled rows."""

    kind: Literal["id_mod", "stratified"] = "stratified"
    modulus: int = Field(default=5, ge=2)
    remainder: int = Field(default=0, ge=0)
    test_fraction: float = Field(default=0.3, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.remainder >= self.modulus:
            raise ValueError(f"remainder {self.remainder} must be below modulus {self.modulus}")
        return self


class SecureBoostModelConfig(_Strict):
    type: Literal["secureboost"] = "secureboost"
    n_trees: int = Field(default=5, ge=1)
    max_depth: int = Field(default=3, ge=1, le=8)
    learning_rate: float = Field(default=0.3, gt=0)
    reg_lambda: float = Field(default=1.0, ge=0)
    min_child_weight: float = Field(default=1.0, ge=0)
    gamma: float = Field(default=0.0, ge=0)
    max_bin: int = Field(default=32, ge=2, le=255)
    subsample: float = Field(default=1.0, gt=0, le=1)
    first_tree_bank_only: bool = True
    min_holder_node_samples: int = Field(default=20, ge=1)
    random_state: int = 0

    def classifier_params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"type"})


class _LinearFields(_Strict):
    """The vertical LR's optimiser (``models.linear``): full batch unless ``batch_size``."""

    backend: Literal["paillier", "ckks"] = "paillier"
    learning_rate: float = Field(default=0.5, gt=0)
    max_iter: int = Field(default=10, ge=1, le=1000)
    alpha: float = Field(default=1e-4, ge=0, description="L2 strength (mean log-loss + a/2|w|^2)")
    tol: float | None = Field(default=1e-4, ge=0)
    n_iter_no_change: int = Field(default=3, ge=1)
    batch_size: int | None = Field(default=None, ge=32)
    random_state: int = 0

    def classifier_params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"type"})


class ScorecardModelConfig(_LinearFields):
    """WOE binning (federated IV) → vertical LR on each party's own WOE values → PDO points."""

    type: Literal["scorecard"] = "scorecard"
    learning_rate: float = Field(default=1.0, gt=0)
    max_iter: int = Field(default=8, ge=1, le=1000)
    max_bin: int = Field(default=32, ge=2, le=255)
    min_bin_samples: int = Field(default=20, ge=1)
    monotonic: bool = True
    min_iv: float = Field(default=0.02, ge=0, description="features below this IV are dropped")
    points0: float = 600.0
    odds0: float = Field(default=1 / 19, gt=0)
    pdo: float = Field(default=50.0, gt=0)
    decimals: int | None = Field(default=0, ge=0, le=6)


class LogisticModelConfig(_LinearFields):
    """Vertical LR on every party's raw (encoded) features, each party z-scoring its own."""

    type: Literal["logistic"] = "logistic"
    standardize: bool = True


ModelConfig = Annotated[
    SecureBoostModelConfig | ScorecardModelConfig | LogisticModelConfig,
    Field(discriminator="type"),
]


class CryptoConfig(_Strict):
    key_bits: Literal[2048, 3072] = 2048
    workers: int = Field(default=2, ge=1, le=256, description="Paillier worker processes per node")


class PsiConfig(_Strict):
    min_overlap: float = Field(
        default=0.1, gt=0, description="smallest intersection: a count, or a fraction if < 1"
    )


class RunConfig(_Strict):
    deadline_s: float = Field(default=120.0, gt=0, description="deadline of every node call")
    resume_wait_s: float = Field(
        default=60.0, ge=0, description="wait this long for a holder that restarts mid-job"
    )


class ExperimentConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    description: str = ""
    bank: BankPartyConfig
    holders: dict[str, PartyConfig]
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig = Field(default_factory=SecureBoostModelConfig)
    crypto: CryptoConfig = Field(default_factory=CryptoConfig)
    psi: PsiConfig = Field(default_factory=PsiConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        if not self.holders:
            raise ValueError("holders: at least one data holder is needed")
        for name in self.holders:
            if name == "bank" or not is_node_id(name):
                raise ValueError(f"holders: {name!r} must be a DNS label other than 'bank'")
        if self.split.kind == "id_mod":
            for name, party in [("bank", self.bank), *self.holders.items()]:
                if party.id_kind != "plain":
                    raise ValueError(f"split id_mod needs integer (plain) ids; {name} uses uscc")
        return self

    # -- derived -------------------------------------------------------------------------------
    def parties(self) -> dict[str, PartyConfig]:
        return {"bank": self.bank, **self.holders}

    def resolved(self, base: Path) -> ExperimentConfig:
        """Paths made absolute against the config file's folder."""
        out = self.model_copy(deep=True)
        for party in out.parties().values():
            if not party.path.is_absolute():
                party.path = (base / party.path).resolve()
        return out


def load_experiment(path: Path) -> tuple[ExperimentConfig, str]:
    """Read and validate CONFIG: (the config with absolute paths, sha256 of the file)."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    config = validate_yaml(text, ExperimentConfig, path)
    return config.resolved(path.parent.resolve()), hashlib.sha256(text).hexdigest()


def missing_data(config: ExperimentConfig) -> list[str]:
    """The party files that are not there (benchmarks say so and skip)."""
    return [f"{name}: {p.path}" for name, p in config.parties().items() if not p.path.exists()]


# ---------------------------------------------------------------------------------------------
# the federation for one experiment


def _table_config(party: PartyConfig, *, label: str | None) -> Any:
    from parties.config import TableConfig

    if party.schema_role is not None:
        return TableConfig(path=party.path, schema_role=party.schema_role)
    return TableConfig(
        path=party.path,
        id_column=party.id_column,
        id_kind=party.id_kind,
        label_column=label,
        features=party.features,
        category=party.category,
    )


def build_experiment(config: ExperimentConfig, workdir: Path) -> Any:
    """PKI and one node directory per party (configs pointing at the files in place)."""
    import os
    import shutil

    from federation.pki import init_pki
    from parties.config import LimitsConfig, NodeConfig, PeerConfig, TlsConfig
    from xinyidai.launcher import Federation, free_ports, prepare_workdir

    prepare_workdir(workdir, made_by="xinyidai experiment run")
    names = list(config.parties())
    pki = init_pki(workdir / "pki", names)
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    configs: dict[str, Path] = {}
    limits = LimitsConfig(
        deadline_s=config.run.deadline_s,
        compute_workers=config.crypto.workers,
        max_message_mb=64,
    )
    for name, party in config.parties().items():
        node_dir = workdir / name
        node_dir.mkdir(parents=True)
        shutil.copyfile(pki.node_cert(name), node_dir / "node.pem")
        shutil.copyfile(pki.ca_cert, node_dir / "ca.pem")
        shutil.copyfile(pki.node_key(name), node_dir / "node.key")
        os.chmod(node_dir / "node.key", 0o600)
        is_bank = name == "bank"
        if is_bank:
            peers = [
                PeerConfig(node_id=h, address=f"127.0.0.1:{ports[h]}", role="holder")
                for h in config.holders
            ]
            platform_key = None
        else:
            peers = [PeerConfig(node_id="bank", role="bank")]
            shutil.copyfile(pki.platform_signing_pub, node_dir / "platform_signing.pub")
            platform_key = Path("platform_signing.pub")
        node = NodeConfig(
            node_id=name,
            role="bank" if is_bank else "holder",
            address=f"127.0.0.1:{ports[name]}",
            tls=TlsConfig(ca=Path("ca.pem"), cert=Path("node.pem"), key=Path("node.key")),
            data=_table_config(party, label=config.bank.label_column if is_bank else None),
            platform_public_key=platform_key,
            peers=peers,
            limits=limits,
        )
        configs[name] = node_dir / "node.yaml"
        configs[name].write_text(node.to_yaml())
    return Federation(workdir=workdir, pki=pki, configs=configs)


# ---------------------------------------------------------------------------------------------
# the comparison models (outside the federation)


def _is_test(config: ExperimentConfig) -> Callable[[list[str]], np.ndarray] | None:
    """For ``id_mod``: the bank maps its own plain ids to the codes the nodes key rows by
    (``uscc.from_plain_id``, as its loader did) and tests ``id % modulus == remainder``."""
    split = config.split
    if split.kind != "id_mod":
        return None
    from parties.data import uscc

    bank = config.bank
    ids = pd.read_csv(bank.path, usecols=[bank.id_column], dtype=str)[bank.id_column].str.strip()
    numbers = pd.to_numeric(ids, errors="coerce")
    if numbers.isna().any() or (numbers % 1 != 0).any():
        bad = ids[numbers.isna() | (numbers % 1 != 0)].iloc[0]
        raise ConfigError(f"split id_mod needs integer ids; {bank.path.name} has {bad!r}")
    codes = uscc.from_plain_id(ids.to_numpy())
    code_to_id = dict(zip(codes, numbers.astype(np.int64), strict=True))

    def is_test(codes: list[str]) -> np.ndarray:
        ids_ = np.array([code_to_id[c] for c in codes], dtype=np.int64)
        return np.asarray(ids_ % split.modulus == split.remainder)

    return is_test


def party_frames(config: ExperimentConfig) -> tuple[dict[str, pd.DataFrame], pd.Series]:
    """Every party's encoded features (as its node encodes them) indexed by the code its node
    keys rows by, and the bank's labels — read in one place, for the centralised comparison."""
    from parties.data.loader import load_table
    from parties.holder.alignment import encode_table

    frames: dict[str, pd.DataFrame] = {}
    labels = pd.Series(dtype=np.float64)
    for name, party in config.parties().items():
        label = config.bank.label_column if name == "bank" else None
        table = _table_config(party, label=label)
        schema = table.table_schema(name)
        loaded = load_table(table.path, schema)
        values, names = encode_table(loaded, schema)
        frames[name] = pd.DataFrame(values, columns=names, index=loaded.index)
        if name == "bank":
            column = schema.label_column or config.bank.label_column
            labels = pd.Series(loaded[column].to_numpy(dtype=np.float64), index=loaded.index)
    return frames, labels


def _joined(config: ExperimentConfig) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    frames, labels = party_frames(config)
    joined = pd.concat(
        [f.add_prefix(f"{name}.") for name, f in frames.items()] + [labels.rename("label")],
        axis=1,
        join="inner",
    )
    joined = joined[joined["label"].notna()]
    columns = {name: [f"{name}.{c}" for c in f.columns] for name, f in frames.items()}
    return joined, columns


def centralised_auc(
    config: ExperimentConfig, train_codes: list[str], test_codes: list[str]
) -> float:
    """LightGBM on every party's columns joined in one place, depth-wise like the federated
    model, on the same train/test rows: the accuracy a data lake would have had."""
    import lightgbm as lgb

    from models.metrics import roc_auc

    joined, _ = _joined(config)
    X = joined.drop(columns=["label"]).to_numpy(dtype=np.float64)
    y = joined["label"].to_numpy()
    m = config.model
    assert isinstance(m, SecureBoostModelConfig)
    depth = m.max_depth
    model = lgb.LGBMClassifier(
        n_estimators=m.n_trees,
        max_depth=depth,
        num_leaves=2**depth,
        learning_rate=m.learning_rate,
        max_bin=m.max_bin,
        min_child_samples=20,
        min_child_weight=m.min_child_weight,
        reg_lambda=m.reg_lambda,
        subsample=m.subsample,
        subsample_freq=1 if m.subsample < 1 else 0,
        random_state=0,
        n_jobs=1,
        verbose=-1,
    )
    train = joined.index.get_indexer(train_codes)
    test = joined.index.get_indexer(test_codes)
    model.fit(X[train], y[train])
    scores = np.asarray(model.predict_proba(X[test]))[:, 1]
    return roc_auc(y[test], scores)


def centralised_linear(
    config: ExperimentConfig,
    train_codes: list[str],
    test_codes: list[str],
    *,
    federated_points: np.ndarray | None = None,
) -> dict[str, Any]:
    """The same model type on every party's columns joined in one place (same rows, same
    optimiser): a scorecard on the same bins (``parties.bank.scorecard.centralised_scorecard``)
    or the plaintext LR twin. Returns its test AUC/KS/Gini and, for a scorecard, the largest
    per-enterprise |points difference| to ``federated_points`` (test rows, same order)."""
    from models.linear import PlaintextLogisticRegression, VerticalLogisticRegression
    from models.metrics import gini, ks_statistic, roc_auc
    from parties.bank.scorecard import ScorecardParams, centralised_scorecard

    joined, columns = _joined(config)
    train = joined.loc[train_codes]
    test = joined.loc[test_codes]
    y_train = train["label"].to_numpy(dtype=np.float64)
    y_test = test["label"].to_numpy(dtype=np.float64)
    m = config.model
    out: dict[str, Any] = {}
    if isinstance(m, ScorecardModelConfig):
        params = ScorecardParams.from_mapping(
            {k: v for k, v in m.classifier_params().items() if k != "backend"}
        )
        categories = {name: p.category for name, p in config.holders.items()}
        card = centralised_scorecard(
            {
                name: (train[cols].to_numpy(dtype=np.float64), cols)
                for name, cols in columns.items()
            },
            y_train,
            params,
            categories={"bank": "bank", **categories},
        )
        feats = {name: test[cols].to_numpy(dtype=np.float64) for name, cols in columns.items()}
        scores = card.predict_proba(feats)[:, 1]
        points = card.score(feats)
        out["centralised_points_auc"] = roc_auc(y_test, -points)
        if federated_points is not None:
            diff = np.abs(np.asarray(federated_points, dtype=np.float64) - points)
            out["points_max_abs_diff"] = float(diff.max())
            out["points_equal_share"] = float(np.mean(diff == 0))
    else:
        assert isinstance(m, LogisticModelConfig)
        kwargs = {k: v for k, v in m.classifier_params().items() if k != "backend"}
        lr_params = VerticalLogisticRegression(**kwargs).linear_params(len(train))
        cols = [c for name in columns for c in columns[name]]
        ref = PlaintextLogisticRegression(lr_params).fit(
            train[cols].to_numpy(dtype=np.float64), y_train
        )
        scores = ref.predict_proba(test[cols].to_numpy(dtype=np.float64))[:, 1]
    out["centralised_auc"] = roc_auc(y_test, scores)
    out["centralised_ks"] = ks_statistic(y_test, scores)
    out["centralised_gini"] = gini(y_test, scores)
    return out


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class ExperimentResult:
    data: dict[str, Any]

    def write(self, path: Path) -> None:
        write_atomic(path, (json.dumps(self.data, indent=1) + "\n").encode(), mode=0o644)


def run_experiment(
    config: ExperimentConfig,
    *,
    config_sha256: str,
    workdir: Path,
    progress: Progress = _quiet,
    on_tree: Callable[[int], None] | None = None,
    on_started: Callable[[Any], None] | None = None,
    tracking: Any = None,
    track: bool = True,
    config_text: str = "",
    on_epoch: Callable[[int, float], None] | None = None,
) -> ExperimentResult:
    """Build the federation, start its nodes, align, train, evaluate, stop; the result.

    The model type picks the training: ``secureboost`` (trees; ``on_tree``), ``scorecard``
    (federated WOE/IV → vertical LR on WOE → points; ``on_epoch``) or ``logistic`` (vertical
    LR on the raw features). With ``track`` the job is logged to MLflow and its model
    registered (``tracking``: a ``xinyidai.tracking.TrackingConfig``; default the
    project-local store or ``MLFLOW_TRACKING_URI``). ``on_started(federation)`` runs once the
    nodes serve (tests use it to restart a holder).
    """
    from federation.audit import AuditLog
    from federation.crypto.paillier import prestart_workers
    from federation.usage import process_usage, read_usage
    from parties.bank.federation import (
        BankTable,
        align,
        holder_peers,
        train_secureboost,
    )
    from parties.config import load_node_config
    from xinyidai.launcher import start_nodes, stop_nodes
    from xinyidai.registration import party_evidence, register_secureboost

    absent = missing_data(config)
    if absent:
        raise ConfigError("experiment data not found: " + "; ".join(absent))
    before = process_usage()
    prestart_workers()  # this process does the bank's Paillier work
    fed = build_experiment(config, workdir)
    bank_cfg = load_node_config(fed.configs["bank"])
    progress(f"nodes: {', '.join(fed.configs)} (each its own process, mTLS on loopback)")
    t0 = time.perf_counter()
    codes: dict[str, int] = {}
    try:  # stop every node that did start, whatever fails (a bad table, a refused job...)
        start_nodes(fed, timeout=120)
        progress(f"nodes serving in {time.perf_counter() - t0:.1f} s")
        if on_started is not None:
            on_started(fed)
        audit = AuditLog(bank_cfg.resolved_audit_url, bank_cfg.node_id)
        t1 = time.perf_counter()
        with holder_peers(bank_cfg, audit=audit) as peers:
            alignment = align(
                bank_cfg,
                peers,
                job_id=f"{config.name}-psi",
                salt=hashlib.sha256(f"xinyidai-experiment|{config.name}".encode()).digest(),
                min_overlap=config.psi.min_overlap,
                audit=audit,
                progress=progress,
            )
        align_seconds = time.perf_counter() - t1
        progress(f"aligned {alignment.size} enterprises in {align_seconds:.1f} s")
        m = config.model
        if isinstance(m, SecureBoostModelConfig):
            params = {**m.classifier_params(), "key_bits": config.crypto.key_bits}
            params["workers"] = config.crypto.workers
            with holder_peers(bank_cfg, audit=audit, service="SecureBoostHolder") as peers:
                clf, report = train_secureboost(
                    bank_cfg,
                    alignment,
                    holders=peers,
                    params=params,
                    job_id=f"{config.name}-sb",
                    is_test=_is_test(config),
                    test_fraction=config.split.test_fraction,
                    split_seed=config.split.seed,
                    audit=audit,
                    progress=progress,
                    on_tree=on_tree,
                    resume_wait_s=config.run.resume_wait_s,
                )
        else:
            model, lin_report = _train_linear(
                config, bank_cfg, alignment, audit=audit, progress=progress, on_epoch=on_epoch
            )
        tracked = None
        if track:
            progress("registering the model (MLflow: parameters, metrics, each party's digest)")
            job = report.job_id if isinstance(m, SecureBoostModelConfig) else lin_report.job_id
            with holder_peers(bank_cfg, audit=audit) as peers:
                datasets, consent = party_evidence(bank_cfg, peers, job_id=job)
            if isinstance(m, SecureBoostModelConfig):
                tracked = register_secureboost(
                    bank_cfg,
                    clf,
                    report,
                    datasets=datasets,
                    consent=consent,
                    config_text=config_text,
                    config_name=f"{config.name}.yaml",
                    tracking=tracking,
                    audit=audit,
                )
            else:
                from xinyidai.registration import register_scorecard

                tracked = register_scorecard(
                    bank_cfg,
                    model,
                    lin_report,
                    datasets=datasets,
                    consent=consent,
                    config_text=config_text,
                    config_name=f"{config.name}.yaml",
                    tracking=tracking,
                    audit=audit,
                )
        if not isinstance(m, SecureBoostModelConfig):
            report = lin_report
        table = BankTable.load(bank_cfg)
        bank_codes = [table.codes[i] for i in alignment.bank_rows]
        train_codes = [bank_codes[i] for i in report.train_positions]
        test_codes = [bank_codes[i] for i in report.test_positions]
        audit.close()
    finally:
        codes = stop_nodes(fed)
    runner = process_usage()
    nodes: dict[str, Any] = {}
    for name in fed.configs:
        usage = read_usage(fed.node_dir(name)) or {}
        entry: dict[str, Any] = {
            "cpu_seconds": usage.get("cpu_seconds"),
            "bytes_sent": usage.get("bytes_sent"),
            "bytes_received": usage.get("bytes_received"),
            "peak_rss_mb": usage.get("peak_rss_mb"),
            "exit_code": codes.get(name),
        }
        if name == "bank":  # the bank's work runs in this process, as the bank's operator
            entry["operator_cpu_seconds"] = round(runner["cpu_seconds"] - before["cpu_seconds"], 3)
            entry["operator_bytes_sent"] = runner["bytes_sent"] - before["bytes_sent"]
            entry["operator_bytes_received"] = runner["bytes_received"] - before["bytes_received"]
            entry["operator_peak_rss_mb"] = runner["peak_rss_mb"]
            for key in ("cpu_seconds", "bytes_sent", "bytes_received"):
                entry[key] = round((entry[key] or 0) + entry[f"operator_{key}"], 3)
            entry["peak_rss_mb"] = max(entry["peak_rss_mb"] or 0.0, runner["peak_rss_mb"])
        nodes[name] = entry
    common = {
        "experiment": config.name,
        "config_sha256": config_sha256,
        "model": m.type,
        "params": m.classifier_params(),
        "key_bits": config.crypto.key_bits,
        "workers": config.crypto.workers,
        "n_aligned": alignment.size,
        "n_train": report.n_train,
        "n_test": report.n_test,
        "test_auc": report.auc,
        "test_ks": report.ks,
    }
    if isinstance(m, SecureBoostModelConfig):
        progress("centralised comparison (LightGBM on all columns in one place)")
        central = centralised_auc(config, train_codes, test_codes)
        specific: dict[str, Any] = {
            "test_gini": 2.0 * report.auc - 1.0,
            "bank_only_auc": report.baseline_auc,
            "bank_only_ks": report.baseline_ks,
            "centralised_auc": central,
            "align_seconds": round(align_seconds, 3),
            "train_seconds": round(sum(report.tree_seconds), 3),
            "train_and_score_seconds": round(report.seconds, 3),
            "tree_seconds": [round(x, 3) for x in report.tree_seconds],
            "split_owners": report.split_owners,
            "resumes": int(clf.model_.stats.get("resumes", 0)),
        }
    else:
        progress(f"centralised comparison ({m.type} on all columns in one place, same rows)")
        points = lin_report.test_points if lin_report.test_points.size else None
        specific = {
            "test_gini": lin_report.gini,
            "bank_only_auc": lin_report.baseline_auc,
            "bank_only_ks": lin_report.baseline_ks,
            "bank_only_gini": lin_report.baseline_gini,
            **centralised_linear(config, train_codes, test_codes, federated_points=points),
            "backend": m.backend,
            "align_seconds": round(align_seconds, 3),
            "train_seconds": round(lin_report.train_seconds, 3),
            "train_and_score_seconds": round(lin_report.seconds, 3),
            "epoch_seconds": [round(x, 3) for x in lin_report.epoch_seconds],
            "n_iter": lin_report.n_iter,
            "top_decile_lift": lin_report.top_decile_lift,
        }
        if isinstance(m, ScorecardModelConfig):
            specific.update(
                {
                    "points_auc": lin_report.points_auc,
                    "points_ks": lin_report.points_ks,
                    "base_points": lin_report.base_points,
                    "features_kept": lin_report.features_kept,
                    **{k: v for k, v in lin_report.timings.items()},
                }
            )
    data = {
        **common,
        **specific,
        "job_id": report.job_id,
        "mlflow": None
        if tracked is None
        else {
            "run_id": tracked.run_id,
            "model_name": tracked.model_name,
            "version": tracked.version,
        },
        "nodes": nodes,
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "workdir": str(workdir),
    }
    return ExperimentResult(data)


def _train_linear(
    config: ExperimentConfig,
    bank_cfg: Any,
    alignment: Any,
    *,
    audit: Any,
    progress: Progress,
    on_epoch: Callable[[int, float], None] | None,
) -> tuple[Any, Any]:
    """A ``scorecard`` or ``logistic`` model across the node processes (the bank's side)."""
    from parties.bank.federation import holder_peers
    from parties.bank.scorecard import ScorecardParams, scorecard_over_nodes, train_logistic

    m = config.model
    crypto = {"key_bits": config.crypto.key_bits, "workers": config.crypto.workers}
    split = {
        "is_test": _is_test(config),
        "test_fraction": config.split.test_fraction,
        "split_seed": config.split.seed,
        "audit": audit,
        "progress": progress,
        "on_epoch": on_epoch,
    }
    if isinstance(m, ScorecardModelConfig):
        params = ScorecardParams.from_mapping({**m.classifier_params(), **crypto})
        return scorecard_over_nodes(
            bank_cfg, alignment, params=params, job_id=f"{config.name}-sc", **split
        )
    with holder_peers(bank_cfg, audit=audit, service="LinearHolder") as linear:
        return train_logistic(
            bank_cfg,
            alignment,
            holders=linear,
            params={**m.classifier_params(), **crypto},
            job_id=f"{config.name}-lr",
            **split,
        )


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


__all__ = [
    "ExperimentConfig",
    "ExperimentResult",
    "build_experiment",
    "centralised_auc",
    "centralised_linear",
    "load_experiment",
    "missing_data",
    "party_frames",
    "run_experiment",
]
