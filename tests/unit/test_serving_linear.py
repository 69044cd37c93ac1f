"""Serving scorecard and LR versions (issue 12, part 3): the pieces that need no node.

The end-to-end checks (real nodes, scores equal to the model's own) are in
``tests/e2e/test_serving_families_nodes.py``.
"""

from __future__ import annotations

import json

import numpy as np

from federation.transport.base import PeerRefused
from models.binning import QuantileBinner
from parties.bank.scorecard_model import binner_from_dict, binner_to_dict
from parties.bank.scoring_linear import _status_of
from parties.bank.served_linear import ServedLinear, family_of


def test_the_banks_bin_edges_survive_its_model_part():
    """Without them a served scorecard could not bin the bank's rows (the old part lacked
    them); a round trip through JSON bins every value, missing and unseen categories alike."""
    rng = np.random.default_rng(3)
    X = np.column_stack(
        [rng.normal(size=400), rng.integers(0, 5, 400).astype(float), rng.lognormal(size=400)]
    )
    X[::17, 0] = np.nan
    binner = QuantileBinner(max_bin=8).fit(X, feature_names=["a", "b", "c"], categorical=[1])
    back = binner_from_dict(json.loads(json.dumps(binner_to_dict(binner))))
    Y = np.vstack([X, [[np.nan, 9.0, 1e9]]])  # an unseen category, a value past every edge
    assert np.array_equal(back.transform(Y), binner.transform(Y))
    assert list(back.n_bins_) == list(binner.n_bins_)
    assert back.feature_names_ == ["a", "b", "c"]


def test_the_family_comes_from_the_bank_parts_format():
    assert family_of(json.dumps({"format": "xinyidai.scorecard.federated/1"})) == "scorecard"
    assert family_of(json.dumps({"format": "xinyidai.linear.bank/1"})) == "logistic"
    assert family_of(json.dumps({"format": "xinyidai.secureboost.bank/1"})) == "secureboost"
    assert family_of("not json") == "secureboost"
    assert family_of("[1, 2]") == "secureboost"


def test_a_linear_version_is_a_served_model_the_servicer_can_name():
    """The servicer resolves a version before scoring and names it in the audit record: a
    ``ServedLinear`` must carry the same fields (``ServedModel``)."""
    from parties.bank.served import ServedModel
    from parties.bank.served_linear import _placeholders

    served = ServedLinear(
        name="credit-lr",
        version="3",
        model_id="credit-lr/3",
        job_id="j",
        owners=("tax",),
        digests={},
        family="logistic",
        lr_job_id="j",
        alignment_id="a",
        holders=("tax",),
        positions={},
        bank_u=np.zeros(0),
        intercept=0.0,
        **_placeholders(),
    )
    assert isinstance(served, ServedModel) and served.model_id == "credit-lr/3"


def test_a_holders_refusal_becomes_a_short_status():
    def refusal(detail: str, code: str = "consent") -> PeerRefused:
        return PeerRefused("tax", "CheckAuthorisation", detail, refusal=code)

    assert _status_of(refusal("authorisation a-1 was revoked on 2026-11-02")) == "revoked"
    assert _status_of(refusal("authorisation a-1 expired")) == "expired"
    assert _status_of(refusal("no authorisation from enterprise X for this bank")) == "no-consent"
    assert _status_of(refusal("open dispute", code="disputed")) == "disputed"


def test_one_enterprise_is_judged_by_the_gate_exactly_as_in_a_batch(tmp_path):
    """A served score asks about one enterprise: the gate takes the consent store's indexed
    lookup for it (``single``) instead of reading every authorisation of the bank. The status
    and the authorisation named in the record must be the batch read's, for every case."""
    import time

    from federation.audit import AuditLog, sqlite_url
    from federation.pki import init_pki, load_platform_public_key
    from models.base import RowAccess
    from models.psi.store import AlignmentStore
    from parties.authorisation import PlatformSigner
    from parties.consent import ConsentRegistry
    from parties.data import uscc
    from parties.disputes import DisputeRegistry
    from parties.holder.service import HolderGate

    pki = init_pki(tmp_path / "pki", ["bank", "tax"])
    signer = PlatformSigner.from_file(pki.platform_signing_key)
    consent = ConsentRegistry(
        sqlite_url(tmp_path / "consent.db"),
        load_platform_public_key(pki.platform_signing_pub),
        node_id="tax",
    )
    audit = AuditLog(sqlite_url(tmp_path / "audit.db"), "tax")
    disputes = DisputeRegistry(
        sqlite_url(tmp_path / "consent.db"), node_id="tax", audit=audit, categories=["tax"]
    )
    codes = list(uscc.generate(np.random.default_rng(7), 8, uscc.CHENGDU_REGIONS))
    now, day = time.time(), 86400.0
    cases = [  # (bank, categories, purpose, valid from, valid until) per code; 6, 7: none
        ("bank", ["tax"], "financing", now - day, now + day),  # ok
        ("bank", ["tax"], "financing", now - day, now + day),  # revoked below
        ("bank", ["tax"], "financing", now - day, now + day),  # disputed below
        ("bank2", ["tax"], "financing", now - day, now + day),  # another bank's
        ("bank", ["electricity"], "financing", now - day, now + day),  # another category
        ("bank", ["tax"], "marketing", now - day, now + day),  # another purpose
    ]
    ids = []
    for code, (bank, cats, purpose, start, end) in zip(codes, cases, strict=False):
        signed = signer.issue(
            uscc=code,
            bank_id=bank,
            purpose=purpose,
            categories=cats,
            valid_from=start,
            valid_until=end,
        )
        consent.grant(signed)
        ids.append(signed.auth.auth_id)
    consent.revoke(ids[1], reason="withdrawn")
    disputes.dispute(codes[2], reason="wrong VAT figure", by="enterprise")
    alignments = AlignmentStore(tmp_path / "alignments", node_id="tax", table_codes=codes)
    alignments.save("bank", "psi-1", np.arange(len(codes), dtype=np.int64))
    gate = HolderGate(
        node_id="tax",
        table_codes=codes,
        consent=consent,
        alignments=alignments,
        categories=["tax"],
        column_categories={},
        disputes=disputes,
    )

    def access(rows: list[int]) -> RowAccess:
        return RowAccess(
            bank="bank",
            method="Predict",
            job_id="j",
            purpose="financing",
            alignment_id="psi-1",
            view="",
            rows=np.asarray(rows, dtype=np.int64),
            training=False,
            categories=("tax",),
        )

    try:
        batch = gate.admit(access(list(range(len(codes)))))
        alone = [gate.admit(access([k]))[0] for k in range(len(codes))]
    finally:
        consent.close()
        disputes.close()
        audit.close()
    assert [s.status for s in batch] == [
        "allow",
        "refused:revoked",
        "refused:disputed",
        "refused:no-consent",
        "refused:category",
        "refused:purpose",
        "refused:no-consent",
        "refused:no-consent",
    ]
    assert alone == batch
    assert alone[0].auth_id == ids[0]
