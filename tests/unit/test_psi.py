"""Private set intersection on USCCs (federation.psi): correctness, errors, cache, privacy."""

from __future__ import annotations

import os
import pickle
import stat
import time

import numpy as np
import pytest
from nacl.bindings import (
    crypto_core_ed25519_from_uniform,
    crypto_scalarmult,
    crypto_sign_ed25519_pk_to_curve25519,
)

from federation import psi
from federation.errors import ConfigError, Refused, XinyidaiError
from federation.psi import cache, curve

SALT = b"unit-test-salt"
CHARSET = np.frombuffer(psi.USCC_CHARSET.encode(), dtype=np.uint8)


def rand_codes(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct random 18-character codes over the USCC charset."""
    seen: dict[str, None] = {}
    while len(seen) < n:
        raw = CHARSET[rng.integers(0, len(CHARSET), size=(n, 18))]
        for c in np.ascontiguousarray(raw).view("S18").ravel().astype(str):
            seen.setdefault(str(c), None)
    return list(seen)[:n]


def make_sets(seed: int, bank: int, holder: int, common: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    pool = rand_codes(rng, bank + holder - common)
    b = pool[:bank]
    h = pool[:common] + pool[bank:]
    return list(rng.permutation(b)), list(rng.permutation(h))


def run_manual(bank_codes, holder_codes, **kw):
    """Run both halves step by step, returning the parties, result and every wire message."""
    bank = psi.PsiBank(bank_codes, salt=SALT, **kw)
    holder = psi.PsiHolder(holder_codes, salt=SALT, **kw)
    q = bank.queries()
    hs = holder.blinded_set()
    d = holder.blind_queries(q)
    res = bank.finish(d, hs)
    pos = res.positions_bytes()
    rows = holder.accept_intersection(pos)
    return bank, holder, res, rows, [q, hs, d, pos]


# --- correctness ---------------------------------------------------------------------------------


def test_intersection_equals_python_sets_in_ascending_code_order():
    b, h = make_sets(1, bank=300, holder=250, common=120)
    out = psi.run_psi_local(b, h, salt=SALT, workers=1)
    expect = sorted(set(b) & set(h))
    assert out.size == len(expect) == 120
    assert [b[i] for i in out.bank_rows] == expect
    assert [h[i] for i in out.holder_rows] == expect


def test_codes_are_normalised_before_hashing():
    b, h = make_sets(2, bank=40, holder=40, common=10)
    messy = [("  " + c.lower() + "\u3000") if i % 2 else c for i, c in enumerate(h)]
    # Full-width letters and digits (common in registry exports) normalise to ASCII by NFKC.
    messy[0] = "".join(chr(ord(ch) + 0xFEE0) for ch in h[0])
    out = psi.run_psi_local(b, messy, salt=SALT, workers=1)
    assert [h[i] for i in out.holder_rows] == sorted(set(b) & set(h))
    # The fast path (plain ASCII) and the slow path (NFKC, strip) agree.
    lower = psi.normalise_codes([c.lower() for c in h])
    assert lower.tolist() == psi.normalise_codes(h).tolist() == psi.normalise_codes(messy).tolist()


def test_process_pool_path_gives_the_same_answer():
    b, h = make_sets(3, bank=700, holder=600, common=333)
    pooled = psi.run_psi_local(b, h, salt=SALT, workers=2, parallel_min=100)
    assert [b[i] for i in pooled.bank_rows] == sorted(set(b) & set(h))
    assert [h[i] for i in pooled.holder_rows] == sorted(set(b) & set(h))


def test_common_order_is_deterministic_across_runs_and_input_orders():
    b, h = make_sets(4, bank=200, holder=200, common=77)
    first = run_manual(b, h, workers=1)
    rng = np.random.default_rng(9)
    b2, h2 = list(rng.permutation(b)), list(rng.permutation(h))
    second = run_manual(b2, h2, workers=1)
    codes1 = [b[i] for i in first[2].bank_rows]
    codes2 = [b2[i] for i in second[2].bank_rows]
    assert codes1 == codes2 == sorted(codes1)
    assert [h2[i] for i in second[3]] == codes2
    # Fresh secret scalars each run: the same sets give unrelated wire bytes.
    assert first[4][1] != second[4][1]
    assert first[4][0] != second[4][0]


def test_messages_one_and_two_may_arrive_on_two_threads_at_once():
    """A gRPC server may serve blinded_set and blind_queries concurrently: one b for both."""
    from concurrent.futures import ThreadPoolExecutor

    b, h = make_sets(21, bank=150, holder=400, common=90)
    bank = psi.PsiBank(b, salt=SALT, workers=1)
    holder = psi.PsiHolder(h, salt=SALT, workers=1)
    with ThreadPoolExecutor(2) as ex:
        hs = ex.submit(holder.blinded_set)
        d = ex.submit(holder.blind_queries, bank.queries())
        res = bank.finish(d.result(), hs.result())
    assert holder.stats.own_blinded == 400
    assert [h[i] for i in holder.accept_intersection(res.positions_bytes())] == sorted(
        set(b) & set(h)
    )


def test_three_party_alignment_uses_one_common_order():
    rng = np.random.default_rng(5)
    pool = rand_codes(rng, 900)
    bank, tax, util = pool[:500], pool[200:700], pool[:100] + pool[350:900]
    out = psi.align_local(bank, [tax, util], salt=SALT, workers=1)
    expect = sorted(set(bank) & set(tax) & set(util))
    assert out.size == len(expect) == 150
    assert [bank[i] for i in out.bank_rows] == expect
    assert [tax[i] for i in out.holder_rows[0]] == expect
    assert [util[i] for i in out.holder_rows[1]] == expect


def test_alignment_min_overlap_applies_to_the_common_set():
    rng = np.random.default_rng(6)
    pool = rand_codes(rng, 300)
    bank, tax, util = pool[:100], pool[:60], pool[50:150]  # pairwise 60 and 50, common 10
    with pytest.raises(psi.PsiOverlapError) as err:
        psi.align_local(bank, [tax, util], salt=SALT, min_overlap=20, workers=1)
    assert err.value.size == 10 and err.value.required == 20


def test_unblinding_scalar_inverts_blinding_and_curve_check_agrees_with_libsodium():
    """X25519(c, X25519(a, P)) = P exactly for curve points; never for twist points."""
    rng = np.random.default_rng(7)
    a, c = curve.bank_scalars()
    b = curve.holder_scalar()
    on = 0
    for i in range(60):
        raw = rng.bytes(32)
        u = bytes(raw[:31]) + bytes((raw[31] & 0x7F,))
        if int.from_bytes(u, "little") >= (1 << 255) - 19:
            continue
        via_bank = crypto_scalarmult(c, crypto_scalarmult(b, crypto_scalarmult(a, u)))
        roundtrip = via_bank == crypto_scalarmult(b, u)
        assert curve.on_curve(curve.mpz_le(u, "little")) == roundtrip, i
        on += roundtrip
    assert 15 < on < 45  # about half of all x-coordinates are on the curve
    # Points libsodium itself maps onto the curve pass the check.
    for i in range(10):
        p = crypto_sign_ed25519_pk_to_curve25519(crypto_core_ed25519_from_uniform(rng.bytes(32)))
        assert curve.check_point(p) is None


def test_hash_blind_matches_public_libsodium_binding():
    code = rand_codes(np.random.default_rng(8), 1)[0]
    b = curve.holder_scalar()
    h = psi.hash_code_point(code, salt=SALT)
    raw = curve.hash_blind_chunk(code.encode(), curve.hash_prefix(SALT), b)
    assert raw == crypto_scalarmult(b, h)
    assert psi.hash_code_point(code, salt=SALT + b"x") != h  # the salt separates domains


# --- errors ----------------------------------------------------------------------------------


def test_no_overlap_is_a_clear_refusal():
    b, h = make_sets(10, bank=50, holder=50, common=0)
    with pytest.raises(psi.PsiOverlapError) as err:
        psi.run_psi_local(b, h, salt=SALT, workers=1)
    assert isinstance(err.value, Refused) and isinstance(err.value, XinyidaiError)
    assert err.value.code == "no_overlap" and err.value.size == 0
    assert "no overlap" in str(err.value)


def test_min_overlap_count_and_fraction():
    b, h = make_sets(11, bank=100, holder=80, common=30)
    with pytest.raises(psi.PsiOverlapError) as err:
        psi.run_psi_local(b, h, salt=SALT, min_overlap=31, workers=1)
    assert err.value.code == "min_overlap" and (err.value.size, err.value.required) == (30, 31)
    with pytest.raises(psi.PsiOverlapError) as err:
        psi.run_psi_local(b, h, salt=SALT, min_overlap=0.31, workers=1)
    assert err.value.required == 31
    assert psi.run_psi_local(b, h, salt=SALT, min_overlap=0.3, workers=1).size == 30
    assert psi.PsiBank(b, salt=SALT, min_overlap=0.07).required_overlap == 7  # not float 7.0000001
    with pytest.raises(ConfigError, match="exceeds"):
        psi.PsiBank(b, salt=SALT, min_overlap=101)
    for bad in (0, -1, 0.0, 1.5, True, "3"):
        with pytest.raises(ConfigError):
            psi.PsiBank(b, salt=SALT, min_overlap=bad)


def test_holder_enforces_its_own_min_overlap():
    b, h = make_sets(12, bank=60, holder=60, common=5)
    bank = psi.PsiBank(b, salt=SALT, workers=1)
    holder = psi.PsiHolder(h, salt=SALT, workers=1, min_overlap=6)
    res = bank.finish(holder.blind_queries(bank.queries()), holder.blinded_set())
    with pytest.raises(psi.PsiOverlapError):
        holder.accept_intersection(res.positions_bytes())


def test_duplicate_codes_are_refused_without_revealing_them():
    codes = rand_codes(np.random.default_rng(13), 20)
    dup = [*codes, " " + codes[7].lower()]
    with pytest.raises(psi.PsiInputError) as err:
        psi.PsiHolder(dup, salt=SALT)
    assert "rows 7 and 20" in str(err.value)
    assert codes[7] not in str(err.value)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("91350100M000100Y1", "18 ASCII"),  # 17 characters
        ("91350100M000100Y1DX", "18 ASCII"),
        ("91350100I000100Y1D", "charset"),  # I, O, S, V, Z are not USCC characters
        (None, "not a string"),
        ("91350100中00100Y1D", "18 ASCII"),
    ],
)
def test_bad_codes_are_refused_naming_the_row(bad, why):
    codes = rand_codes(np.random.default_rng(14), 5)
    codes[3] = bad
    with pytest.raises(psi.PsiInputError, match=f"row 3: .*{why}"):
        psi.PsiBank(codes, salt=SALT)


def test_option_errors():
    codes = rand_codes(np.random.default_rng(15), 5)
    with pytest.raises(ConfigError, match="salt"):
        psi.PsiBank(codes, salt=b"")
    with pytest.raises(ConfigError, match="salt"):
        psi.PsiHolder(codes, salt="text")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="workers"):
        psi.PsiHolder(codes, salt=SALT, workers=0)
    with pytest.raises(psi.PsiInputError, match="empty"):
        psi.PsiBank([], salt=SALT)


@pytest.fixture(scope="module")
def session():
    """One finished exchange, reused by the malformed-message tests (they do not mutate it)."""
    b, h = make_sets(20, bank=40, holder=50, common=15)
    bank = psi.PsiBank(b, salt=SALT, workers=1, max_holder_set=50)
    holder = psi.PsiHolder(h, salt=SALT, workers=1, max_queries=45)
    q = bank.queries()
    hs = holder.blinded_set()
    d = holder.blind_queries(q)
    return bank, holder, q, hs, d


def _twist_point() -> bytes:
    """A canonical x-coordinate of the quadratic twist (libsodium's X25519 accepts it)."""
    for u in range(2, 100):
        p = u.to_bytes(32, "little")
        if not curve.on_curve(curve.mpz_le(p, "little")):
            return p
    raise AssertionError("no twist point below 100: the curve check is broken")


def test_holder_refuses_malformed_queries(session):
    _, holder, q, _, _ = session
    cases = [
        (q[:-1], "not a positive multiple of 32"),
        (b"", "not a positive multiple of 32"),
        (q[:64] + b"\xff" * 32, "query 2: not a canonical"),
        (q[:32] + _twist_point() + q[64:96], "query 1: not a point on Curve25519"),
        ((1).to_bytes(32, "little") + q[:32], "query 0: a small-order point"),
    ]
    for msg, text in cases:
        with pytest.raises(psi.PsiProtocolError, match=text) as err:
            holder.blind_queries(msg)
        assert err.value.step == "blind_queries"
    with pytest.raises(psi.PsiProtocolError, match="expected bytes"):
        holder.blind_queries(q.hex())  # type: ignore[arg-type]
    with pytest.raises(Refused) as err:
        holder.blind_queries(q + q[: 32 * 6])  # 46 queries > max_queries=45
    assert err.value.code == "size"


def test_bank_refuses_malformed_answers(session):
    bank, _, _, hs, d = session
    cases = [
        (d[:-32], hs, "are 1248 bytes; 40 queries"),
        (d, hs[:-3], "holder set is .* not a positive multiple of 16"),
        (d, hs[16:32] + hs[:16] + hs[32:], "not strictly ascending"),
        (d, hs[:16] + hs[16:], None),  # unchanged: accepted
        (d, hs[:16] + hs[:16] + hs[32:], "not strictly ascending"),  # duplicate tag
        (d[:96] + _twist_point() + d[128:], hs, "double-blinded query 3: not a point"),
    ]
    with pytest.raises(Refused) as err:
        bank.finish(d, hs + b"\xff" * 16)  # 51 codes > max_holder_set=50
    assert err.value.code == "size"
    for dbl, hset, text in cases:
        if text is None:
            assert bank.finish(dbl, hset).size == 15
            continue
        with pytest.raises(psi.PsiProtocolError, match=text) as err:
            bank.finish(dbl, hset)
        assert err.value.step == "finish"


def test_holder_refuses_malformed_positions(session):
    bank, holder, _, hs, d = session
    good = bank.finish(d, hs).holder_positions
    assert holder.accept_intersection(good).size == 15
    cases = [
        (good.astype("<u4").tobytes()[:-1], "not a multiple of 4"),
        (np.append(good, 50).astype("<u4").tobytes(), "position 15 is 50, outside the sent set"),
        (good[::-1].astype("<u4").tobytes(), "not in the agreed ascending-code order"),
        (np.append(good, good[-1]).astype("<u4").tobytes(), "repeat"),
        (good.astype(float), "1-D integer array"),
    ]
    for msg, text in cases:
        with pytest.raises(psi.PsiProtocolError, match=text) as err:
            holder.accept_intersection(msg)
        assert err.value.step == "accept_intersection"
    fresh = psi.PsiHolder(["91350100M000100Y1D"], salt=SALT)
    with pytest.raises(psi.PsiProtocolError, match="before this holder sent"):
        fresh.accept_intersection(b"\x00\x00\x00\x00")


# --- cache -----------------------------------------------------------------------------------


def test_holder_cache_is_reused_and_private(tmp_path):
    b, h = make_sets(30, bank=150, holder=200, common=64)
    cache = tmp_path / "psi-cache"
    first = psi.PsiHolder(h, salt=SALT, cache_dir=cache, workers=1)
    sent = first.blinded_set()
    assert first.stats.own_blinded == 200 and not first.stats.cache_hit
    (f,) = cache.iterdir()
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700

    second = psi.PsiHolder(h, salt=SALT, cache_dir=cache, workers=1)
    bank = psi.PsiBank(b, salt=SALT, workers=1)
    res = bank.finish(second.blind_queries(bank.queries()), second.blinded_set())
    rows = second.accept_intersection(res.positions_bytes())
    assert second.stats.cache_hit and second.stats.own_blinded == 0 and second.stats.hashed == 0
    assert second.blinded_set() == sent
    assert [h[i] for i in rows] == sorted(set(b) & set(h))

    other_salt = psi.PsiHolder(h, salt=SALT + b"2", cache_dir=cache, workers=1)
    other_salt.blinded_set()
    assert other_salt.stats.own_blinded == 200 and len(list(cache.iterdir())) == 2


def test_expired_cache_rotates_the_scalar(tmp_path, monkeypatch):
    codes = rand_codes(np.random.default_rng(31), 30)
    first = psi.PsiHolder(codes, salt=SALT, cache_dir=tmp_path, workers=1, cache_max_age=3600)
    sent = first.blinded_set()
    later = time.time() + 7200
    monkeypatch.setattr(cache.time, "time", lambda: later)
    second = psi.PsiHolder(codes, salt=SALT, cache_dir=tmp_path, workers=1, cache_max_age=3600)
    assert second.blinded_set() != sent and second.stats.own_blinded == 30
    third = psi.PsiHolder(codes, salt=SALT, cache_dir=tmp_path, workers=1, cache_max_age=3600)
    assert third.blinded_set() == second.blinded_set() and third.stats.cache_hit


def test_unsafe_or_damaged_cache_is_refused(tmp_path):
    codes = rand_codes(np.random.default_rng(32), 30)
    psi.PsiHolder(codes, salt=SALT, cache_dir=tmp_path, workers=1).blinded_set()
    (f,) = tmp_path.iterdir()
    os.chmod(f, 0o644)
    with pytest.raises(psi.PsiCacheError, match="mode 0644"):
        psi.PsiHolder(codes, salt=SALT, cache_dir=tmp_path, workers=1).blinded_set()
    os.chmod(f, 0o600)
    data = bytearray(f.read_bytes())
    data[100] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(psi.PsiCacheError, match="damaged"):
        psi.PsiHolder(codes, salt=SALT, cache_dir=tmp_path, workers=1).blinded_set()


# --- privacy ---------------------------------------------------------------------------------


def test_wire_carries_no_code_and_no_unblinded_point():
    b, h = make_sets(40, bank=120, holder=100, common=50)
    _, _, res, _, wire = run_manual(b, h, workers=1)
    blob = b"".join(wire)
    for code in set(b) | set(h):
        assert code.encode() not in blob
        point = psi.hash_code_point(code, salt=SALT)
        assert point[:16] not in blob and point[16:] not in blob
    # Only sizes are visible: fixed-width records of the documented widths.
    q, hs, d, pos = wire
    assert (len(q), len(d), len(hs), len(pos)) == (32 * 120, 32 * 120, 16 * 100, 4 * res.size)


def test_party_objects_refuse_pickling():
    codes = rand_codes(np.random.default_rng(41), 5)
    for party in (psi.PsiBank(codes, salt=SALT), psi.PsiHolder(codes, salt=SALT)):
        with pytest.raises(TypeError, match="secret scalar"):
            pickle.dumps(party)
