"""End to end: align (PSI) → train (SecureBoost, 2048-bit keys) → evaluate, across three node
processes over mutual TLS, driven by the bank's orchestration with the bank's credentials."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from federation.audit import AuditLog, sqlite_url
from federation.errors import PeerError
from models.binning import QuantileBinner
from models.psi.store import AlignmentError
from models.secureboost.reference import BoostParams, PartyBins, PlaintextSecureBoost
from parties.bank.alignment import align
from parties.bank.secureboost import train_secureboost
from parties.config import load_node_config
from parties.data.encoding import encode_table
from parties.data.loader import load_table
from parties.data.schema import schema_for
from parties.node import holder_peers

pytestmark = pytest.mark.e2e

SALT = b"e2e-training-salt"
PARAMS = dict(n_trees=4, max_depth=3, learning_rate=0.3, max_bin=32, random_state=0)
HOLDERS = ("tax", "utility")


@pytest.fixture(scope="module")
def trained(start_federation, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("training")
    fed, _ = start_federation(workdir, enterprises=1200, seed=11, deadline_s=60.0, workers=1)
    bank = load_node_config(fed.configs["bank"])
    audit = AuditLog(bank.resolved_audit_url, "bank")
    with holder_peers(bank, audit=audit) as peers:
        alignment = align(bank, peers, job_id="e2e-align", salt=SALT, min_overlap=0.2, audit=audit)
    with holder_peers(bank, audit=audit, service="SecureBoostHolder") as peers:
        clf, report = train_secureboost(
            bank,
            alignment,
            holders=peers,
            params={**PARAMS, "key_bits": 2048, "workers": 1},
            audit=audit,
        )
    yield SimpleNamespace(
        fed=fed, bank=bank, audit=audit, alignment=alignment, clf=clf, report=report
    )
    audit.close()


def _encoded(fed, node_id: str):
    cfg = load_node_config(fed.configs[node_id])
    schema = schema_for(cfg.data.schema_role)
    table = load_table(cfg.data.path, schema)
    values, names = encode_table(table, schema, as_of=cfg.data.as_of)
    return table, values, names


def test_alignment_is_the_common_set_in_ascending_code_order_at_every_node(trained):
    fed, a = trained.fed, trained.alignment
    tables = {n: _encoded(fed, n)[0] for n in ("bank", *HOLDERS)}
    common = set(tables["bank"].index) & set(tables["tax"].index) & set(tables["utility"].index)
    codes = [tables["bank"].index[i] for i in a.bank_rows]
    assert a.size == len(common) > 0 and codes == sorted(common)
    assert a.bank_size == len(tables["bank"])
    for holder in HOLDERS:
        assert a.holder_sizes[holder] == len(tables[holder])
        rows = np.frombuffer(
            (fed.node_dir(holder) / "alignments" / "bank" / "e2e-align.rows").read_bytes(), "<u4"
        )
        assert [tables[holder].index[i] for i in rows] == codes  # same enterprise, same row
    assert (fed.node_dir("bank") / "alignments" / "e2e-align.json").exists()


def test_federated_predictions_equal_the_plaintext_reference_across_processes(trained):
    """The test sees every party's data: join it by the alignment, bin each party's training
    rows as that party does, and train the plaintext reference."""
    fed, a, r = trained.fed, trained.alignment, trained.report
    bank_table, bank_x, _ = _encoded(fed, "bank")
    codes = [bank_table.index[i] for i in a.bank_rows]
    y = bank_table["default_12m"].to_numpy(dtype=float)[a.bank_rows]
    parts = {"bank": bank_x[a.bank_rows]}
    for holder in HOLDERS:
        table, values, _ = _encoded(fed, holder)
        parts[holder] = values[table.index.get_indexer(codes)]
    train, test = r.train_positions, r.test_positions
    train_bins, test_bins = [], []
    for name, x in parts.items():
        binner = QuantileBinner(max_bin=PARAMS["max_bin"]).fit(x[train])
        train_bins.append(PartyBins(name, binner.transform(x[train]), binner.n_bins_))
        test_bins.append(PartyBins(name, binner.transform(x[test]), binner.n_bins_))
    ref = PlaintextSecureBoost(BoostParams(**PARAMS)).fit(train_bins, y[train])
    expected = ref.predict_proba(test_bins)[:, 1]
    assert np.abs(r.test_scores - expected).max() <= 1e-9
    assert {"tax", "utility"} & set(r.split_owners), "no holder won a split"
    assert r.auc > r.baseline_auc, (r.auc, r.baseline_auc)


def test_models_are_kept_where_they_belong(trained):
    fed, r = trained.fed, trained.report
    bank_model = fed.node_dir("bank") / "models" / f"{r.job_id}.json"
    assert bank_model.exists() and '"holders"' in bank_model.read_text()
    for holder in HOLDERS:
        path = fed.node_dir(holder) / "models" / "bank" / f"{r.job_id}.json"
        assert path.exists() and path.stat().st_mode & 0o077 == 0
        assert "binner" in path.read_text()


def test_too_high_min_overlap_is_refused_naming_the_holder(trained):
    bank, audit = trained.bank, trained.audit
    with holder_peers(bank, audit=audit) as peers:
        with pytest.raises(AlignmentError) as refused:
            align(bank, {"utility": peers["utility"]}, job_id="e2e-greedy", salt=SALT,
                  min_overlap=0.99, audit=audit)  # fmt: skip
    assert "holder 'utility'" in str(refused.value) and "min_overlap" in str(refused.value)
    assert not (bank.node_dir / "alignments" / "e2e-greedy.json").exists()
    assert not (
        trained.fed.node_dir("utility") / "alignments" / "bank" / "e2e-greedy.json"
    ).exists()


def test_training_on_an_unknown_alignment_is_refused_by_the_holder(trained):
    bank, audit, a = trained.bank, trained.audit, trained.alignment
    fake = type(a)(**{**a.__dict__, "job_id": "never-aligned"})
    with holder_peers(bank, audit=audit, service="SecureBoostHolder") as peers:
        with pytest.raises(Exception) as failed:
            train_secureboost(bank, fake, holders=peers, params={**PARAMS, "key_bits": 2048})
    assert "never-aligned" in str(failed.value) and "does not exist" in str(failed.value)
    assert isinstance(failed.value.__cause__, PeerError)


def test_audit_logs_of_all_nodes_record_psi_and_secureboost_and_verify(trained):
    fed, r = trained.fed, trained.report
    for node in ("bank", *HOLDERS):
        log = AuditLog(sqlite_url(Path(fed.node_dir(node)) / "audit.db"), node)
        try:
            assert log.verify().ok
            ops = {(rec.direction, rec.operation, rec.job_id) for rec in log.query()}
        finally:
            log.close()
        side = "made" if node == "bank" else "served"
        for op in ("PsiStart", "PsiBlind", "PsiAccept", "GetBlob", "PutBlob"):
            assert (side, op, "e2e-align") in ops, (node, op)
        for op in ("Start", "Gradients", "Histograms", "Finish", "Predict"):
            assert (side, op, r.job_id) in ops, (node, op)
        if node == "bank":
            assert ("local", "psi.align", "e2e-align") in ops
            assert ("local", "secureboost.train", r.job_id) in ops
