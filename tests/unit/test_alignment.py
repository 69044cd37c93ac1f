"""PSI over the holder's DataHolder service, in-process: the real runtime, InProcessPeer, blobs."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from federation.blobs import BlobStore
from federation.errors import PeerError
from federation.psi import PsiBank
from federation.transport.base import PeerRefused, ServiceRuntime, new_meta
from federation.transport.inproc import InProcessPeer
from federation.transport.policy import PurposePolicy
from models.psi.active import align_codes
from models.psi.store import AlignmentError, AlignmentStore
from parties.bank.table import stratified_split
from parties.config import NodeConfig, PeerConfig, TableConfig, TlsConfig
from parties.data.encoding import encode_table
from parties.data.loader import load_table
from parties.data.schema import schema_for
from parties.data.synth import synthesize_city
from parties.holder.service import HolderServicer
from parties.holder.views import TrainingView
from protos import holder_pb2

SALT = b"unit-salt"


def _holder(tmp_path: Path, role: str, frame: pd.DataFrame) -> SimpleNamespace:
    node_dir = tmp_path / role
    (node_dir / "data").mkdir(parents=True)
    csv = node_dir / "data" / f"{role}.csv"
    frame.to_csv(csv, index=False)
    schema = schema_for(role)
    table = load_table(csv, schema)
    config = NodeConfig(
        node_id=role,
        role="holder",
        node_dir=node_dir,
        tls=TlsConfig(ca=Path("ca"), cert=Path("c"), key=Path("k")),
        data=TableConfig(path=csv, schema_role=role),  # type: ignore[arg-type]
        peers=[PeerConfig(node_id="bank", role="bank")],
    )
    servicer = HolderServicer(
        config=config,
        table=table,
        schema=schema,
        consent=None,  # type: ignore[arg-type]  (PSI does not consult consent)
        blobs=BlobStore(node_dir / "blobs", max_bytes=1 << 26),
        column_key=b"k" * 32,
    )
    runtime = ServiceRuntime(servicer, node_id=role, audit=None, purposes=PurposePolicy())
    peer = InProcessPeer(runtime, self_id="bank", audit=None, deadline_s=30)
    return SimpleNamespace(servicer=servicer, runtime=runtime, peer=peer, table=table)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("align")
    tables = synthesize_city(n_enterprises=400, seed=5)
    holders = {role: _holder(tmp, role, tables[role]) for role in ("tax", "utility")}
    return SimpleNamespace(bank=list(tables["bank"]["uscc"]), holders=holders, tmp=tmp)


def _peers(city) -> dict[str, InProcessPeer]:
    return {name: h.peer for name, h in city.holders.items()}


def test_psi_over_the_holder_service_aligns_every_party_in_one_common_order(city):
    a = align_codes(city.bank, _peers(city), job_id="j-ok", salt=SALT, min_overlap=0.1)
    tax, util = city.holders["tax"], city.holders["utility"]
    common = set(city.bank) & set(tax.table.index) & set(util.table.index)
    assert a.size == len(common) > 0
    codes = [city.bank[i] for i in a.bank_rows]
    assert codes == sorted(common)
    assert a.pairwise["tax"] == len(set(city.bank) & set(tax.table.index))
    for h in (tax, util):
        rows = h.servicer.alignments.load("bank", "j-ok")
        assert [h.table.index[i] for i in rows] == codes
        assert not h.servicer.psi._open  # the session is closed
        # the PSI messages are gone once the job is done
        assert not list((h.servicer.blobs.root / "bank" / "j-ok").glob("psi-set*"))
        view = TrainingView(h.table, schema_for(h.servicer.config.node_id), h.servicer.alignments)
        values, names = view.features_for("bank", "j-ok")
        assert values.shape == (a.size, len(names))


def test_a_second_psi_job_under_the_same_id_is_refused(city):
    align_codes(city.bank, _peers(city), job_id="j-twice", salt=SALT)
    with pytest.raises(PeerError) as failed:
        align_codes(city.bank, _peers(city), job_id="j-twice", salt=SALT)
    assert failed.value.code == "FAILED_PRECONDITION" and "exists already" in str(failed.value)


def test_too_small_an_overlap_is_refused_naming_the_holder_and_the_holders_drop_the_job(city):
    with pytest.raises(AlignmentError) as refused:
        align_codes(city.bank, _peers(city), job_id="j-low", salt=SALT, min_overlap=0.95)
    assert "holder 'utility' shares" in str(refused.value) and "min_overlap" in str(refused.value)
    for h in city.holders.values():
        assert not h.servicer.psi._open
        assert not h.servicer.alignments.exists("bank", "j-low")


def _start(peer, job: str, *, min_overlap: int = 1):
    meta = new_meta(job_id=job)
    started = peer.call(
        "PsiStart", holder_pb2.PsiStartRequest(meta=meta, salt=SALT, min_overlap=min_overlap)
    )
    return b"".join(peer.get_blob(started.set_blob_id, meta=new_meta(job_id=job)))


def test_malformed_queries_and_positions_are_invalid_argument_naming_holder_and_step(city):
    peer = city.holders["tax"].peer
    _start(peer, "j-bad")
    peer.put_blob("q", b"\x01" * 33, meta=new_meta(job_id="j-bad"))
    with pytest.raises(PeerError) as bad:
        peer.call("PsiBlind", holder_pb2.PsiBlindRequest(meta=new_meta(job_id="j-bad"),
                                                        queries_blob_id="q"))  # fmt: skip
    assert bad.value.code == "INVALID_ARGUMENT"
    assert "tax" in str(bad.value) and "blind_queries" in str(bad.value)

    peer.put_blob("p", b"\x00\x00\x00", meta=new_meta(job_id="j-bad"))  # not uint32 records
    with pytest.raises(PeerError) as bad_pos:
        peer.call("PsiAccept", holder_pb2.PsiAcceptRequest(meta=new_meta(job_id="j-bad"),
                                                          positions_blob_id="p"))  # fmt: skip
    assert bad_pos.value.code == "INVALID_ARGUMENT" and "accept_intersection" in str(bad_pos.value)

    repeated = np.array([0, 0], dtype="<u4").tobytes()  # repeated: not the agreed order
    peer.put_blob("p2", repeated, meta=new_meta(job_id="j-bad"))
    with pytest.raises(PeerError) as bad_order:
        peer.call("PsiAccept", holder_pb2.PsiAcceptRequest(meta=new_meta(job_id="j-bad"),
                                                          positions_blob_id="p2"))  # fmt: skip
    assert bad_order.value.code == "INVALID_ARGUMENT" and "order" in str(bad_order.value)

    with pytest.raises(PeerError) as missing:
        peer.call("PsiBlind", holder_pb2.PsiBlindRequest(meta=new_meta(job_id="j-bad"),
                                                        queries_blob_id="nope"))  # fmt: skip
    assert missing.value.code == "NOT_FOUND"
    peer.call("PsiAbort", holder_pb2.PsiAbortRequest(meta=new_meta(job_id="j-bad"), reason="t"))
    assert not city.holders["tax"].servicer.psi._open


def test_steps_out_of_order_bad_salt_and_missing_job_id_are_refused(city):
    peer = city.holders["tax"].peer
    with pytest.raises(PeerError) as early:
        peer.call("PsiBlind", holder_pb2.PsiBlindRequest(meta=new_meta(job_id="j-none"),
                                                        queries_blob_id="q"))  # fmt: skip
    assert early.value.code == "FAILED_PRECONDITION" and "PsiStart first" in str(early.value)
    with pytest.raises(PeerError) as salt:
        peer.call("PsiStart", holder_pb2.PsiStartRequest(meta=new_meta(job_id="j-s"), salt=b""))
    assert salt.value.code == "INVALID_ARGUMENT" and "salt" in str(salt.value)
    with pytest.raises(PeerError) as nojob:
        peer.call("PsiStart", holder_pb2.PsiStartRequest(meta=new_meta(), salt=SALT))
    assert nojob.value.code == "INVALID_ARGUMENT" and "job_id" in str(nojob.value)


def test_the_holder_refuses_an_intersection_below_the_jobs_minimum_itself(city):
    """Even if a bank sent positions of a smaller set, the holder applies the job's minimum."""
    peer = city.holders["tax"].peer
    holder_set = _start(peer, "j-min", min_overlap=10_000)
    bank = PsiBank(city.bank, salt=SALT)
    peer.put_blob("q", bank.queries(), meta=new_meta(job_id="j-min"))
    blinded = peer.call(
        "PsiBlind", holder_pb2.PsiBlindRequest(meta=new_meta(job_id="j-min"), queries_blob_id="q")
    )
    answer = b"".join(peer.get_blob(blinded.answer_blob_id, meta=new_meta(job_id="j-min")))
    result = bank.finish(answer, holder_set)
    peer.put_blob("p", result.positions_bytes(), meta=new_meta(job_id="j-min"))
    with pytest.raises(PeerRefused) as refused:
        peer.call("PsiAccept", holder_pb2.PsiAcceptRequest(meta=new_meta(job_id="j-min"),
                                                          positions_blob_id="p"))  # fmt: skip
    assert refused.value.refusal == "min_overlap"
    assert not city.holders["tax"].servicer.alignments.exists("bank", "j-min")


def test_an_unlisted_bank_may_not_run_psi(city):
    other = InProcessPeer(city.holders["tax"].runtime, self_id="shadow-bank", audit=None,
                          deadline_s=5)  # fmt: skip
    with pytest.raises(PeerRefused) as refused:
        other.call("PsiStart", holder_pb2.PsiStartRequest(meta=new_meta(job_id="x"), salt=SALT))
    assert refused.value.refusal == "caller"


def test_a_stored_alignment_is_refused_when_damaged_or_for_another_table(tmp_path):
    store = AlignmentStore(tmp_path, node_id="tax", table_codes=["A", "B", "C"])
    store.save("bank", "j", np.array([2, 0]))
    assert store.load("bank", "j").tolist() == [2, 0]
    assert (tmp_path / "bank" / "j.rows").stat().st_mode & 0o077 == 0
    changed = AlignmentStore(tmp_path, node_id="tax", table_codes=["A", "B", "D"])
    with pytest.raises(AlignmentError, match="different table"):
        changed.load("bank", "j")
    (tmp_path / "bank" / "j.rows").write_bytes(np.array([1, 0], "<u4").tobytes())
    with pytest.raises(AlignmentError, match="damaged"):
        store.load("bank", "j")
    with pytest.raises(AlignmentError, match="does not exist"):
        store.load("bank", "other")


def test_holder_tables_are_encoded_as_numbers_for_training():
    schema = schema_for("tax")
    table = pd.DataFrame(
        {
            "industry": ["C", "F"],
            "tax_credit_grade": ["A", "D"],
            "abnormal_taxpayer": [1.0, 0.0],
            "in_tax_arrears": [0.0, np.nan],
            "tax_arrears_amount": [0.0, 5.0],
            "vat_payable_12m": [1.0, 2.0],
            "vat_paid_12m": [1.0, 2.0],
            "cit_payable_12m": [np.nan, 1.0],
            "cit_paid_12m": [np.nan, 1.0],
            "consecutive_normal_months": [12.0, 0.0],
            "last_normal_payment_date": pd.to_datetime(["2024-06-20", None]),
        },
        index=pd.Index(["X", "Y"], name="uscc"),
    )
    values, names = encode_table(table, schema, as_of=date(2024, 6, 30))
    assert "industry" not in names and "uscc" not in names
    col = dict(zip(names, values.T, strict=True))
    assert col["tax_credit_grade"].tolist() == [5.0, 1.0]  # A best ... D worst
    assert col["last_normal_payment_date"][0] == 10 and np.isnan(col["last_normal_payment_date"][1])
    assert np.isnan(col["in_tax_arrears"][1])


def test_the_split_is_stratified_deterministic_and_disjoint():
    y = np.array([0] * 90 + [1] * 10, dtype=float)
    train, test = stratified_split(y, test_fraction=0.3, seed=3)
    again = stratified_split(y, test_fraction=0.3, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert not set(train) & set(test) and len(train) + len(test) == 100
    assert y[test].sum() == 3 and len(test) == 30
