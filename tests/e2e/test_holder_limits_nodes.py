"""End to end: a holder's ``node.yaml`` ``policy:`` bounds what a bank may make it compute,
across real node processes over mutual TLS (issue 10, items 4 and 6).

The tax holder runs with a tightened policy (``max_trees: 3``, ``min_holders: 3``,
``max_answers_per_enterprise_per_day: 3``); the utility holder with the defaults. Checked over the wire: a 4,097-bit Paillier modulus is
refused (before the holder reads a row: the job names no alignment it has) and recorded;
``min_holders`` comes from ``node.yaml``; a bank asking more trees than a holder allows hears
which holder refused and which limit, and the holder that accepted counted the job in its
persistent ledger (``NODE_DIR/limits.json``, 0600).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from phe import PaillierPublicKey

from federation.audit import AuditLog
from federation.crypto import make_public_params, public_params_to_bytes
from federation.transport.base import PeerRefused, new_meta
from models.secureboost.bank_state import FederatedTrainingError
from parties.bank.alignment import align
from parties.bank.secureboost import train_secureboost
from parties.config import load_node_config
from parties.node import holder_peers
from protos import linear_pb2
from protos import secureboost_pb2 as pb

pytestmark = pytest.mark.e2e

TAX_POLICY = {"max_trees": 3, "min_holders": 3, "max_answers_per_enterprise_per_day": 3}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    from xinyidai.demo import build_federation
    from xinyidai.launcher import start_nodes, stop_nodes

    workdir = tmp_path_factory.mktemp("limits")
    federation, _ = build_federation(workdir, enterprises=600, seed=5, deadline_s=30.0, workers=1)
    path = federation.configs["tax"]
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["policy"] = TAX_POLICY
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    try:
        start_nodes(federation)
        bank = load_node_config(federation.configs["bank"])
        audit = AuditLog(bank.resolved_audit_url, "bank")
        yield SimpleNamespace(fed=federation, bank=bank, audit=audit)
        audit.close()
    finally:
        stop_nodes(federation)


def _modulus_params(bits: int) -> bytes:
    rng = np.random.default_rng(bits)
    n = (1 << (bits - 1)) | int.from_bytes(rng.bytes(bits // 8), "big") % (1 << (bits - 1)) | 1
    return public_params_to_bytes(make_public_params(PaillierPublicKey(n)))


def _tax_audit(fed: SimpleNamespace) -> AuditLog:
    return AuditLog(load_node_config(fed.fed.configs["tax"]).resolved_audit_url, "tax")


def test_a_4097_bit_modulus_is_refused_over_mtls_and_recorded(fed):
    start = pb.SecureBoostStart(
        meta=new_meta(job_id="big-key"),
        paillier_params=_modulus_params(4097),
        n_rows=100,
        max_bin=32,
        max_depth=3,
        n_trees=2,
        min_node_samples=20,
        alignment_id="no-such-alignment",  # refused before the holder looks for rows
    )
    with holder_peers(fed.bank, audit=fed.audit, service="SecureBoostHolder") as peers:
        with pytest.raises(PeerRefused) as refused:
            peers["tax"].call("Start", start)
    assert refused.value.refusal == "limit"
    assert "paillier_max_bits = 4096" in refused.value.detail and "4097" in refused.value.detail
    audit = _tax_audit(fed)
    denied = [e for e in audit.query(job_id="big-key") if e.direction == "served"]
    audit.close()
    assert len(denied) == 1 and denied[0].decision == "deny"
    assert "paillier_max_bits" in denied[0].reason


def test_min_holders_comes_from_node_yaml(fed):
    start = linear_pb2.LinearStart(
        meta=new_meta(job_id="lr-two"), backend="paillier", n_holders=2, alpha=0.0, max_iter=1
    )
    with holder_peers(fed.bank, audit=fed.audit, service="LinearHolder") as peers:
        with pytest.raises(PeerRefused) as refused:
            peers["tax"].call("Start", start)
        # the utility holder keeps the default (1): it goes on to look for the key blob
        with pytest.raises(Exception) as other:
            peers["utility"].call("Start", start)
    assert refused.value.refusal == "min_holders" and "min_holders = 3" in refused.value.detail
    assert getattr(other.value, "refusal", None) != "min_holders"


def test_the_bank_hears_which_holder_refused_which_limit(fed):
    with holder_peers(fed.bank, audit=fed.audit) as peers:
        alignment = align(
            fed.bank, peers, job_id="limits-align", salt=b"limits", min_overlap=0.2, audit=fed.audit
        )
    params = {"n_trees": 4, "max_depth": 3, "max_bin": 32, "key_bits": 2048, "workers": 1}
    with holder_peers(fed.bank, audit=fed.audit, service="SecureBoostHolder") as peers:
        with pytest.raises(FederatedTrainingError) as refused:
            train_secureboost(
                fed.bank, alignment, holders=peers, params=params, audit=fed.audit, job_id="sb-4"
            )
    assert refused.value.holder == "tax"
    assert "max_trees = 3" in str(refused.value) and "4 trees" in str(refused.value)
    # the holder that accepted the Start counted the job; the ledger is private to the node
    ledger: Path = fed.fed.node_dir("utility") / "limits.json"
    assert ledger.exists() and ledger.stat().st_mode & 0o777 == 0o600
    assert "limits-align" in ledger.read_text(encoding="utf-8")
    tax_ledger = fed.fed.node_dir("tax") / "limits.json"
    assert not tax_ledger.exists() or "limits-align" not in tax_ledger.read_text(encoding="utf-8")


def test_answers_about_one_enterprise_are_bounded_per_bank_per_day(fed):
    """A bank may ask about one enterprise only so often (``max_answers_per_enterprise_per_day``):
    past it that enterprise is refused (code ``limit``), the holder writes an alert, and other
    enterprises — and holders with a looser policy — still answer."""
    from federation.pki import load_platform_public_key
    from parties.bank.table import BankTable
    from parties.consent import ConsentRegistry
    from parties.node import connect

    with holder_peers(fed.bank, audit=fed.audit) as peers:
        alignment = align(
            fed.bank, peers, job_id="quota-align", salt=b"quota", min_overlap=0.2, audit=fed.audit
        )
    params = {"n_trees": 2, "max_depth": 2, "max_bin": 16, "key_bits": 2048, "workers": 1}
    with holder_peers(fed.bank, audit=fed.audit, service="SecureBoostHolder") as peers:
        _, report = train_secureboost(
            fed.bank, alignment, holders=peers, params=params, audit=fed.audit, job_id="sb-quota"
        )
    table = BankTable.load(fed.bank)
    aligned = [table.codes[i] for i in alignment.bank_rows]
    key = load_platform_public_key(fed.fed.node_dir("tax") / "platform_signing.pub")
    active: set[str] = set()
    for holder in ("tax", "utility"):
        with ConsentRegistry.for_node_dir(
            fed.fed.node_dir(holder), key, node_id=holder
        ) as registry:
            codes = {r.auth.uscc for r in registry.list(bank_id="bank") if r.status == "active"}
        active = codes if not active else active & codes
    first, second = [i for i, c in enumerate(aligned) if c in active][:2]

    def predict(holder: str, pos: int) -> None:
        (peer,) = [p for p in fed.bank.holders if p.node_id == holder]
        with connect(fed.bank, peer, audit=None, service="SecureBoostHolder") as client:
            client.call(
                "Predict",
                pb.SecureBoostPredictRequest(
                    meta=new_meta(job_id=report.job_id), rows=[pos], alignment_id=alignment.job_id
                ),
            )

    for _ in range(3):
        predict("tax", first)
    with pytest.raises(PeerRefused) as refused:
        predict("tax", first)
    assert refused.value.refusal == "limit"
    assert aligned[first] in refused.value.detail and "(quota)" in refused.value.detail
    predict("tax", second)  # another enterprise is still answered
    for _ in range(2):
        predict("utility", first)  # utility keeps the default (200 a day)
    with _tax_audit(fed) as log:
        alerts = [e for e in log.query(peer="bank") if e.operation == "answer-quota"]
        refusals = [s for e, s in log.subjects_of(aligned[first]) if e.operation == "Predict"]
    assert alerts and alerts[-1].decision == "alert" and aligned[first] in alerts[-1].reason
    assert [s.status for s in refusals][-4:] == ["allow"] * 3 + ["refused:quota"]
