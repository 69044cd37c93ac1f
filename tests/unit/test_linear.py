"""Vertical logistic regression over the in-process transport twin (1024-bit Paillier test keys,
CKKS at the production parameters).

What is checked:
- equivalence: with two holders (binned/WOE-like and raw continuous features) every party's
  coefficients are within 1e-3 of the centralised reference with the same optimiser, and the
  AUC within 1e-3 (Paillier); the AUC within 0.005 (CKKS); also with mini-batches, early
  stopping and a decaying schedule;
- the Paillier holder's gradient is exact fixed-point arithmetic for both feature layouts;
- the wire: no label, feature value or single holder's linear predictor crosses in the clear;
  the masked contributions differ from each holder's true one and cancel exactly in the sum;
  every ciphertext a holder returns is fresh;
- bad input and failures: constant features (bank, holder), divergence (last good iterate
  kept), schema drift, a holder refusing or disconnecting (nothing half-written), restarts.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from carriers import FlakyPeer, RecordingPeer, small_keys

from federation.blobs import BlobStore
from federation.crypto import ciphertexts_from_bytes, public_params_from_bytes
from federation.transport.base import PeerRefused, ServiceRuntime, new_meta
from federation.transport.inproc import InProcessPeer
from federation.transport.policy import PurposePolicy
from models.base import UNGATED
from models.linear import (
    BACKENDS,
    BackendError,
    ConstantFeatureError,
    CryptoOptions,
    DivergenceError,
    FederatedTrainingError,
    LinearHolderServicer,
    LinearParams,
    PlaintextLogisticRegression,
    SchemaDriftError,
    VerticalLogisticRegression,
    get_backend,
    local_holders,
)
from models.linear.backends import (
    FEATURE_SCALE_BITS,
    RESIDUAL_SCALE_BITS,
    PaillierBank,
    PaillierHolder,
    PairwiseMasks,
    encode_contribution,
    new_x25519,
)
from models.metrics import roc_auc
from models.rows import mask_to_bytes as rows_to_bytes
from protos import common_pb2
from protos import linear_pb2 as pb

KEY_BITS = 1024
SERVICE = pb.DESCRIPTOR.services_by_name["LinearHolder"]


class GradientFlakyPeer(FlakyPeer):
    trip_method = "Gradient"


def spy_on_forward(servicers) -> dict[str, dict[str, np.ndarray]]:
    """Record each holder's TRUE linear predictor at every Forward (what masks must hide)."""
    truth: dict[str, dict[str, np.ndarray]] = {}
    for name, servicer in servicers.items():
        truth[name] = {}
        original = servicer.Forward

        def forward(request, call, _s=servicer, _orig=original, _log=truth[name]):
            job = _s.job(call)
            mask = np.unpackbits(np.frombuffer(request.rows, np.uint8))[: job.n_rows]
            _log[request.tag] = job.features[np.flatnonzero(mask)] @ job.weights
            return _orig(request, call)

        servicer.Forward = forward
    return truth


# --------------------------------------------------------------------------------------------
# data: a bank with three raw columns, "tax" with two raw continuous columns and "utility" with
# a WOE-like column (five values), a 0/1 indicator and a binned (ordinal) column


def make_data(n: int = 600, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    bank = rng.normal(size=(n, 3)) * [1.0, 2.0, 0.5]
    tax = np.column_stack([rng.normal(size=n), rng.gamma(2.0, 1.5, n)])
    woe_values = np.array([-0.83, -0.31, 0.07, 0.42, 1.19])
    utility = np.column_stack(
        [
            woe_values[rng.integers(0, 5, n)],
            (rng.random(n) < 0.3).astype(float),
            rng.integers(0, 8, n).astype(float),
        ]
    )
    logit = bank @ [0.8, -0.3, 0.6] + tax @ [0.7, -0.4] + utility @ [1.1, 0.9, -0.15] - 0.2
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return SimpleNamespace(
        X_bank=pd.DataFrame(bank, columns=["balance", "loans", "age"]),
        y=y,
        holders={
            "tax": (tax, ["vat_paid", "income_tax"]),
            "utility": (utility, ["woe_power", "late_flag", "usage_band"]),
        },
    )


def concatenated(data: SimpleNamespace) -> np.ndarray:
    return np.column_stack([data.X_bank.to_numpy(), *[f for f, _ in data.holders.values()]])


def federated_coefficients(clf, servicers) -> np.ndarray:
    parts = [clf.coef_[0]] + [s.model("bank", clf.job_id_).weights for s in servicers.values()]
    return np.concatenate(parts)


PARAMS = dict(learning_rate=0.5, max_iter=15, tol=None, alpha=1e-3, random_state=0)


@pytest.fixture(scope="module")
def paillier_run(tmp_path_factory):
    data = make_data()
    peers, servicers = local_holders(
        data.holders, tmp_path_factory.mktemp("lr"), peer_class=RecordingPeer
    )
    truth = spy_on_forward(servicers)
    clf = VerticalLogisticRegression(
        backend="paillier", key_bits=KEY_BITS, workers=1, job_id="lr-job", **PARAMS
    )
    with small_keys():
        clf.fit(data.X_bank, data.y, holders=peers)
    p_fed = clf.predict_proba(data.X_bank, holders=peers)[:, 1]
    ref = PlaintextLogisticRegression(LinearParams(**PARAMS)).fit(concatenated(data), data.y)
    return SimpleNamespace(
        data=data, peers=peers, servicers=servicers, clf=clf, ref=ref, truth=truth, p_fed=p_fed
    )


# --------------------------------------------------------------------------------------------
# equivalence with the centralised reference


def test_paillier_two_holders_match_the_centralised_reference(paillier_run):
    r = paillier_run
    fed = federated_coefficients(r.clf, r.servicers)
    assert fed.shape == r.ref.coef_[0].shape == (8,)
    assert np.abs(fed - r.ref.coef_[0]).max() < 1e-3
    assert abs(r.clf.intercept_[0] - r.ref.intercept_[0]) < 1e-3
    assert np.abs(fed).min() > 1e-3  # every party's coefficients moved: the check has teeth
    assert r.clf.n_iter_ == r.ref.n_iter_ == PARAMS["max_iter"]
    assert np.allclose(r.clf.loss_curve_, r.ref.loss_curve_, atol=1e-6)
    assert r.clf.loss_curve_[-1] < r.clf.loss_curve_[0]
    auc_fed = roc_auc(r.data.y, r.p_fed)
    auc_ref = roc_auc(r.data.y, r.ref.predict_proba(concatenated(r.data))[:, 1])
    assert auc_fed > 0.75 and abs(auc_fed - auc_ref) < 1e-3
    assert r.clf.coef_.shape == (1, 3) and r.clf.holders_ == ["tax", "utility"]


def test_ckks_two_holders_reach_the_centralised_auc(tmp_path):
    data = make_data(n=500, seed=1)
    peers, servicers = local_holders(data.holders, tmp_path)
    params = dict(PARAMS, max_iter=8)
    clf = VerticalLogisticRegression(backend="ckks", **params).fit(
        data.X_bank, data.y, holders=peers
    )
    ref = PlaintextLogisticRegression(LinearParams(**params)).fit(concatenated(data), data.y)
    auc_fed = roc_auc(data.y, clf.predict_proba(data.X_bank, holders=peers)[:, 1])
    auc_ref = roc_auc(data.y, ref.predict_proba(concatenated(data))[:, 1])
    assert auc_fed > 0.75 and abs(auc_fed - auc_ref) < 0.005
    # approximate arithmetic, but close: the holders' coefficients too
    fed = federated_coefficients(clf, servicers)
    assert np.abs(fed - ref.coef_[0]).max() < 1e-3


def test_minibatch_early_stopping_and_schedule_follow_the_reference(tmp_path):
    data = make_data(n=800, seed=2)
    peers, servicers = local_holders(data.holders, tmp_path)
    params = dict(
        learning_rate=0.8,
        lr_schedule="invscaling",
        power_t=0.3,
        batch_size=200,
        max_iter=12,
        early_stopping=True,
        validation_fraction=0.25,
        n_iter_no_change=2,
        tol=1e-3,
        C=2.0,
        standardize=True,
        random_state=3,
    )
    clf = VerticalLogisticRegression(backend="paillier", key_bits=KEY_BITS, workers=1, **params)
    with small_keys():
        clf.fit(data.X_bank, data.y, holders=peers)
    alpha = 1.0 / (2.0 * 600)  # C over the 600 training rows
    ref_params = {k: v for k, v in params.items() if k != "C"}
    ref = PlaintextLogisticRegression(LinearParams(alpha=alpha, **ref_params)).fit(
        concatenated(data), data.y
    )
    assert clf.params_.alpha == pytest.approx(alpha)
    assert clf.n_iter_ == ref.n_iter_ and clf.keep_epoch_ == ref.keep_epoch_
    assert clf.outcome_ == ref.outcome_
    assert len(clf.validation_scores_) == clf.n_iter_
    fed = federated_coefficients(clf, servicers)
    assert np.abs(fed - ref.coef_[0]).max() < 1e-3
    assert abs(clf.intercept_[0] - ref.intercept_[0]) < 1e-3


# --------------------------------------------------------------------------------------------
# the Paillier holder's arithmetic


def test_paillier_holder_gradient_is_exact_fixed_point_for_both_layouts():
    rng = np.random.default_rng(4)
    n = 300
    X = np.column_stack(
        [
            rng.normal(size=n) * 3.0,  # continuous: digit buckets
            np.array([-0.5, 0.25, 1.75])[rng.integers(0, 3, n)],  # WOE-like: value table
            -np.abs(rng.normal(size=n)) - 2.0,  # all negative
        ]
    )
    r = rng.uniform(-1, 1, n)
    rows = np.sort(rng.choice(n, 200, replace=False))
    with small_keys():
        bank = PaillierBank(CryptoOptions(key_bits=KEY_BITS, workers=1))
        holder = PaillierHolder(
            bank.public_bytes(), residual_scale_bits=RESIDUAL_SCALE_BITS, workers=1
        )
        holder.prepare(X, 200)
        pieces, _ = bank.encrypt_residuals(r[rows])
        masked, masks = holder.masked_gradient(b"".join(pieces), rows)
        decrypted = bank.decrypt_masked(masked, 3)
        got = holder.unmask(masks, decrypted)
    assert {f.kind for f in holder.features} == {"table", "digits"}
    r_q = [round(v * 2**RESIDUAL_SCALE_BITS) for v in r[rows].tolist()]
    for j in range(3):
        x_q = [round(v * 2**FEATURE_SCALE_BITS) for v in X[rows, j].tolist()]
        exact = sum(a * b for a, b in zip(r_q, x_q, strict=True))
        assert got[j] == exact / 2 ** (RESIDUAL_SCALE_BITS + FEATURE_SCALE_BITS)
    # the bank's decryptions are masked: nothing near the true sums
    width = (KEY_BITS + 7) // 8
    plain = [int.from_bytes(decrypted[i * width : (i + 1) * width], "big") for i in range(3)]
    assert all(v.bit_length() > KEY_BITS - 64 for v in plain)
    bank.close()
    holder.close()


def test_pairwise_masks_cancel_exactly_and_differ_per_tag():
    keys = [new_x25519() for _ in range(3)]
    publics = [pk for _, pk in keys]
    masks = [PairwiseMasks.agree(sk, publics, context=b"bank|job") for sk, _ in keys]
    total = np.zeros(50, dtype=np.uint64)
    for m in masks:
        total += m.mask(b"t1", 50)
    assert not total.any()
    assert not np.array_equal(masks[0].mask(b"t1", 50), masks[0].mask(b"t2", 50))
    other_job = PairwiseMasks.agree(keys[0][0], publics, context=b"bank|job2")
    assert not np.array_equal(other_job.mask(b"t1", 50), masks[0].mask(b"t1", 50))
    with pytest.raises(BackendError, match="once"):
        PairwiseMasks.agree(keys[0][0], publics[1:], context=b"x")


def test_backend_registry():
    assert set(BACKENDS) == {"paillier", "ckks"}
    assert get_backend("ckks").name == "ckks"
    with pytest.raises(BackendError, match="unknown backend"):
        get_backend("rsa")
    with pytest.raises(Exception, match="backend"):
        VerticalLogisticRegression(backend="rsa").linear_params(10)


# --------------------------------------------------------------------------------------------
# what crosses the wire


def _patterns(values: np.ndarray, dtype: type) -> np.ndarray:
    """Distinctive byte patterns (both byte orders; at least half the bytes non-zero)."""
    arr = np.unique(np.asarray(values)[np.isfinite(values)].astype(dtype))
    width = arr.dtype.itemsize
    raw = arr.view(np.uint8).reshape(-1, width)
    arr = arr[(raw != 0).sum(axis=1) >= width // 2]
    view = np.uint64 if width == 8 else np.uint32
    native = arr.view(view)
    return np.unique(np.concatenate([native, native.byteswap()]))


def _windows(buf: bytes) -> np.ndarray:
    out = [
        np.frombuffer(buf, dtype=np.uint64, count=(len(buf) - k) // 8, offset=k)
        for k in range(8)
        if len(buf) - k >= 8
    ]
    return np.concatenate(out)


def _hits(windows: np.ndarray, patterns: dict[str, np.ndarray]) -> dict[str, int]:
    """How many windows equal a pattern of each kind (one binary search, no sort of windows)."""
    kinds = list(patterns)
    pats = np.concatenate([patterns[k] for k in kinds])
    label = np.concatenate([np.full(patterns[k].size, i) for i, k in enumerate(kinds)])
    order = np.argsort(pats, kind="stable")
    pats, label = pats[order], label[order]
    idx = np.minimum(np.searchsorted(pats, windows), pats.size - 1)
    hit = pats[idx] == windows
    counts = np.bincount(label[idx[hit]], minlength=len(kinds))
    return {k: int(counts[i]) for i, k in enumerate(kinds)}


def test_no_label_feature_value_or_single_holder_predictor_crosses_the_wire(paillier_run):
    r = paillier_run
    everything = b"".join(raw for peer in r.peers.values() for _, _, raw in peer.wire)
    assert len(everything) > 500_000  # ciphertexts did travel
    win = _windows(everything)
    secrets_by_kind = {"bank features": r.data.X_bank.to_numpy().ravel()}
    for name, (features, _) in r.data.holders.items():
        secrets_by_kind[f"{name} features"] = features.ravel()
        fixed = np.rint(features.ravel() * 2**FEATURE_SCALE_BITS).astype(np.int64)
        secrets_by_kind[f"{name} fixed-point features"] = fixed
    for name, tags in r.truth.items():
        u = np.concatenate(list(tags.values()))
        secrets_by_kind[f"{name} linear predictor"] = u
        secrets_by_kind[f"{name} fixed-point linear predictor"] = encode_contribution(
            u, "test"
        ).view(np.int64)
    found = {}
    for what, values in secrets_by_kind.items():
        dtype = np.int64 if values.dtype == np.int64 else np.float64
        found[what] = _patterns(values, dtype)
        assert found[what].size >= 2, what  # the check has teeth for every kind
    for what, hits in _hits(win, found).items():
        assert not hits, f"a {what} value crossed the wire"
    y = r.data.y
    for form in (
        np.packbits(y.astype(bool)).tobytes(),
        np.packbits(~y.astype(bool)).tobytes(),
        y.astype(np.uint8).tobytes(),
        y.astype(np.float64).tobytes(),
        "".join(map(str, y)).encode(),
    ):
        assert form[:24] not in everything, "the label vector crossed the wire"


def test_the_bank_receives_masked_contributions_that_cancel_only_in_the_sum(paillier_run):
    r = paillier_run
    replies = {}
    for name, peer in r.peers.items():
        requests = [raw for m, d, raw in peer.wire if (m, d) == ("Forward", "request")]
        responses = [raw for m, d, raw in peer.wire if (m, d) == ("Forward", "response")]
        assert len(requests) == len(responses) == PARAMS["max_iter"] + 1  # e0..e15
        replies[name] = {
            pb.LinearForward.FromString(q).tag: pb.LinearContribution.FromString(a)
            for q, a in zip(requests, responses, strict=True)
        }
    for tag in replies["tax"]:
        total = np.zeros(len(r.data.y), dtype=np.uint64)
        true_total = np.zeros(len(r.data.y), dtype=np.uint64)
        for name in ("tax", "utility"):
            reply = replies[name][tag]
            got = np.frombuffer(reply.values, dtype="<u8").astype(np.uint64)
            true = encode_contribution(r.truth[name][tag], "test")
            assert reply.masked
            assert (got != true).mean() > 0.99, f"{name} {tag}: a contribution is unmasked"
            total += got
            true_total += true
        assert np.array_equal(total, true_total), f"{tag}: masks do not cancel"
    assert np.abs(r.truth["tax"]["e15"]).max() > 0.1  # the hidden values are not trivial


def test_every_returned_ciphertext_is_fresh(paillier_run):
    for peer in paillier_run.peers.values():
        public = b"".join(
            common_pb2.BlobChunk.FromString(raw).data
            for m, d, raw in peer.wire
            if m == "PutBlob" and d == "request"
        )
        with small_keys():
            start = next(raw for m, d, raw in peer.wire if m == "Start" and d == "request")
            assert pb.LinearStart.FromString(start).public_key_blob == "public-key"
            first_blob = next(
                common_pb2.BlobChunk.FromString(raw)
                for m, d, raw in peer.wire
                if m == "PutBlob" and d == "request"
            )
            params = public_params_from_bytes(first_blob.data)
        width = params.ciphertext_bytes
        sent = {public[i : i + width] for i in range(0, len(public), width)}
        returned = [
            pb.LinearMaskedGradient.FromString(raw).masked
            for m, d, raw in peer.wire
            if (m, d) == ("Gradient", "response")
        ]
        assert len(returned) == PARAMS["max_iter"]
        cts = [c[i : i + width] for c in returned for i in range(0, len(c), width)]
        assert len(cts) == len(set(cts)) and not sent & set(cts)
        with small_keys():
            assert len(ciphertexts_from_bytes(b"".join(cts), params)) == len(cts)


def test_the_protocol_carries_no_real_values_but_the_penalty_and_step_size():
    floats = {
        f"{m.name}.{f.name}"
        for m in pb.DESCRIPTOR.message_types_by_name.values()
        for f in m.fields
        if f.type in (f.TYPE_DOUBLE, f.TYPE_FLOAT)
    }
    assert floats == {"LinearStart.alpha", "LinearUpdate.learning_rate"}
    for method in SERVICE.methods:
        fields = method.input_type.fields_by_name
        assert "meta" in fields, method.name
        if method.input_type.file is pb.DESCRIPTOR:
            assert fields["meta"].number == 1, method.name


def test_one_holder_is_unmasked_and_a_holder_may_refuse_that(tmp_path):
    data = make_data(n=300, seed=5)
    holders = {"tax": data.holders["tax"]}
    peers, servicers = local_holders(holders, tmp_path / "a", peer_class=RecordingPeer)
    truth = spy_on_forward(servicers)
    clf = VerticalLogisticRegression(backend="paillier", key_bits=KEY_BITS, workers=1, max_iter=2)
    with small_keys():
        clf.fit(data.X_bank, data.y, holders=peers)
    reply = next(
        pb.LinearContribution.FromString(raw)
        for m, d, raw in peers["tax"].wire
        if (m, d) == ("Forward", "response")
    )
    assert not reply.masked  # documented: with one holder the bank learns X_k w_k
    got = np.frombuffer(reply.values, dtype="<u8").astype(np.uint64)
    assert np.array_equal(got, encode_contribution(truth["tax"]["e0"], "test"))
    strict, _ = local_holders(holders, tmp_path / "b", min_holders=2)
    with small_keys(), pytest.raises(FederatedTrainingError) as err:
        VerticalLogisticRegression(key_bits=KEY_BITS, workers=1, max_iter=2).fit(
            data.X_bank, data.y, holders=strict
        )
    assert err.value.holder == "tax" and "at least 2" in str(err.value)


# --------------------------------------------------------------------------------------------
# bad input and failures


def test_a_constant_bank_feature_is_refused_before_any_holder_is_contacted(tmp_path):
    data = make_data(n=200)
    peers, _ = local_holders(data.holders, tmp_path, peer_class=RecordingPeer)
    clf = VerticalLogisticRegression(key_bits=KEY_BITS, workers=1)
    with pytest.raises(ConstantFeatureError, match="'loans'"):
        clf.fit(data.X_bank.assign(loans=3.0), data.y, holders=peers)
    with pytest.raises(Exception, match="single class"):
        clf.fit(data.X_bank, np.zeros_like(data.y), holders=peers)
    assert all(not p.wire for p in peers.values())
    assert not hasattr(clf, "coef_")


def test_a_constant_holder_feature_stops_training_without_revealing_its_name(tmp_path):
    data = make_data(n=200)
    util, names = data.holders["utility"]
    util = util.copy()
    util[:, 1] = 1.0
    peers, servicers = local_holders(
        {"tax": data.holders["tax"], "utility": (util, names)}, tmp_path
    )
    clf = VerticalLogisticRegression(key_bits=KEY_BITS, workers=1)
    with small_keys(), pytest.raises(FederatedTrainingError) as err:
        clf.fit(data.X_bank, data.y, holders=peers)
    message = str(err.value)
    assert err.value.holder == "utility" and "feature #1" in message and "constant" in message
    assert names[1] not in message
    assert all(not s.open_jobs() for s in servicers.values())


def test_divergence_keeps_the_last_good_iterate(tmp_path):
    data = make_data(n=300, seed=6)
    peers, servicers = local_holders(data.holders, tmp_path)
    # the step size grows 6x per epoch: good for a few epochs, then the loss explodes
    params = dict(
        learning_rate=0.5, lr_schedule="step", lr_step_epochs=1, lr_decay=6.0, max_iter=20
    )
    clf = VerticalLogisticRegression(key_bits=KEY_BITS, workers=1, random_state=0, **params)
    with small_keys(), pytest.raises(DivergenceError) as err:
        clf.fit(data.X_bank, data.y, holders=peers)
    with pytest.raises(DivergenceError) as ref_err:
        PlaintextLogisticRegression(LinearParams(random_state=0, **params)).fit(
            concatenated(data), data.y
        )
    keep = err.value.keep_epoch
    assert keep >= 1 and err.value.epoch == keep + 1 == ref_err.value.epoch
    assert f"after epoch {keep}" in str(err.value)
    # the estimator and every holder hold the iterate after epoch `keep`, usable for scoring
    assert clf.keep_epoch_ == keep and clf.n_iter_ in (keep, keep + 1)
    assert clf.outcome_ == "diverged"
    held = [s.model("bank", clf.job_id_) for s in servicers.values()]
    assert all(m.epoch == keep for m in held)
    ref = PlaintextLogisticRegression(LinearParams(random_state=0, **dict(params, max_iter=keep)))
    ref.fit(concatenated(data), data.y)
    assert np.abs(federated_coefficients(clf, servicers) - ref.coef_[0]).max() < 1e-3
    p = clf.predict_proba(data.X_bank, holders=peers)[:, 1]
    assert np.all(np.isfinite(p))
    assert all(not s.open_jobs() for s in servicers.values())


def test_schema_drift_between_fit_and_predict_is_refused(paillier_run, tmp_path):
    r = paillier_run
    X = r.data.X_bank
    with pytest.raises(SchemaDriftError, match=r"'debt'.*'loans'"):
        r.clf.predict_proba(X.rename(columns={"loans": "debt"}), holders=r.peers)
    with pytest.raises(SchemaDriftError, match=r"2 columns.*3"):
        r.clf.predict_proba(X.iloc[:, :2], holders=r.peers)
    with pytest.raises(Exception, match="utility"):
        r.clf.predict_proba(X, holders={"tax": r.peers["tax"]})
    # a holder whose table lost a column since training: it refuses, the bank names it
    tax_features, tax_names = r.data.holders["tax"]
    moved = LinearHolderServicer(
        node_id="tax",
        features=tax_features[:, :1],
        feature_names=tax_names[:1],
        banks=["bank"],
        blobs=BlobStore(tmp_path / "blobs", max_bytes=1 << 20),
    ).use_gate(UNGATED)  # in-process, the test's own data (as local_holders)
    moved.load_model("bank", r.clf.job_id_, r.servicers["tax"].model("bank", r.clf.job_id_))
    runtime = ServiceRuntime(moved, node_id="tax", audit=None, purposes=PurposePolicy())
    peers = {"tax": InProcessPeer(runtime, self_id="bank", audit=None, deadline_s=5)}
    peers["utility"] = r.peers["utility"]
    with pytest.raises(SchemaDriftError, match="tax"):
        r.clf.predict_proba(X, holders=peers)


def test_a_holder_disconnecting_leaves_nothing_half_written(tmp_path):
    data = make_data(n=300, seed=7)
    peers, servicers = local_holders(data.holders, tmp_path, peer_class=GradientFlakyPeer)
    clf = VerticalLogisticRegression(key_bits=KEY_BITS, workers=1, max_iter=3, job_id="first")
    with small_keys():
        clf.fit(data.X_bank, data.y, holders=peers)
        before_json = clf.to_json()
        before = clf.predict_proba(data.X_bank, holders=peers)
        peers["utility"].trip_at = peers["utility"].calls + 2  # in epoch 2 of the next job
        clf.job_id = "second"
        with pytest.raises(FederatedTrainingError) as err:
            clf.fit(data.X_bank, data.y, holders=peers)
    assert err.value.holder == "utility" and "UNAVAILABLE" in str(err.value)
    assert "epoch 2" in err.value.stage
    assert all(not s.open_jobs() for s in servicers.values())  # both told to drop the job
    for name in servicers:
        models = tmp_path / name / "models" / "bank"
        assert sorted(p.name for p in models.iterdir()) == ["linear-first.json"]
    assert clf.to_json() == before_json
    peers["utility"].down = False
    peers["utility"].trip_at = None
    assert np.array_equal(before, clf.predict_proba(data.X_bank, holders=peers))


def test_holder_policy_callers_tags_and_restarts(paillier_run, tmp_path):
    r = paillier_run
    runtime = r.peers["tax"].runtime
    stranger = InProcessPeer(runtime, self_id="other-bank", audit=None, deadline_s=5)
    with pytest.raises(PeerRefused) as caller:
        stranger.call("Finish", pb.LinearFinish(meta=new_meta(job_id="lr-job"), abort=True))
    assert caller.value.refusal == "caller"
    # a model part on disk: 0600, JSON, and a restarted holder scores exactly the same
    path = Path(r.servicers["tax"].models_dir) / "bank" / "linear-lr-job.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["format"] == "xinyidai.linear.holder/1"
    features, names = r.data.holders["tax"]
    restarted = LinearHolderServicer(
        node_id="tax",
        features=features,
        feature_names=names,
        banks=["bank"],
        blobs=BlobStore(tmp_path / "blobs", max_bytes=1 << 20),
        models_dir=r.servicers["tax"].models_dir,
    ).use_gate(UNGATED)
    runtime = ServiceRuntime(restarted, node_id="tax", audit=None, purposes=PurposePolicy())
    peers = dict(r.peers, tax=InProcessPeer(runtime, self_id="bank", audit=None, deadline_s=5))
    again = r.clf.predict_proba(r.data.X_bank, holders=peers)[:, 1]
    assert np.allclose(again, r.p_fed, atol=1e-12)
    loaded = VerticalLogisticRegression.from_json(r.clf.to_json())
    assert np.allclose(loaded.predict_proba(r.data.X_bank, holders=peers)[:, 1], r.p_fed)


def test_a_holder_answers_each_forward_tag_once(tmp_path):
    data = make_data(n=200)
    peers, servicers = local_holders({"tax": data.holders["tax"]}, tmp_path)
    peer = peers["tax"]
    meta = new_meta(job_id="manual")
    with small_keys():
        bank = PaillierBank(CryptoOptions(key_bits=KEY_BITS, workers=1))
        peer.put_blob("public-key", bank.public_bytes(), meta=meta)
        peer.call(
            "Start",
            pb.LinearStart(
                meta=meta,
                backend="paillier",
                public_key_blob="public-key",
                n_rows=200,
                alpha=0.0,
                residual_scale_bits=RESIDUAL_SCALE_BITS,
                max_iter=1,
                n_holders=1,
            ),
        )
        bank.close()
    started = servicers["tax"]._jobs[("bank", "manual")]
    peer.call(
        "Peers",
        pb.LinearPeers(
            meta=meta, holders=[pb.LinearPeerKey(holder="tax", x25519_public_key=started.public)]
        ),
    )
    rows = rows_to_bytes(np.ones(200, dtype=bool))
    forward = pb.LinearForward(meta=meta, tag="e0", rows=rows, n_rows=200)
    peer.call("Forward", forward)
    with pytest.raises(PeerRefused) as again:
        peer.call("Forward", forward)
    assert again.value.refusal == "tag"
    with pytest.raises(Exception, match="rows set"):
        peer.call("Forward", pb.LinearForward(meta=meta, tag="e1", rows=rows, n_rows=5))
    peer.call("Finish", pb.LinearFinish(meta=meta, abort=True))
    assert not servicers["tax"].open_jobs()
