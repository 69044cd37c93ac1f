"""USCC (GB 32100-2015) validation, generation and id mapping."""

from __future__ import annotations

import numpy as np
import pytest

from federation.errors import ConfigError
from parties.data import uscc

# Worked example from GB 32100-2015 explanatory material (check character '3').
KNOWN_VALID = "91350100M000100Y43"


def _reference_check(first17: str) -> str:
    """Independent re-statement of the standard: weights are 3**i mod 31."""
    total = sum(uscc.CHARSET.index(c) * pow(3, i, 31) for i, c in enumerate(first17))
    return uscc.CHARSET[(31 - total % 31) % 31]


def test_known_code_and_check_character():
    assert uscc.is_valid(KNOWN_VALID)
    assert uscc.check_character(KNOWN_VALID[:17]) == "3"
    assert uscc.region_code(KNOWN_VALID) == "350100"
    assert list(uscc.WEIGHTS) == [pow(3, i, 31) for i in range(17)]


def test_normalise_accepts_what_people_type():
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in KNOWN_VALID)  # ９１３５…
    assert uscc.normalise(fullwidth) == KNOWN_VALID
    assert uscc.normalise(" 9135 0100m000 100y43\t") == KNOWN_VALID
    assert uscc.problem(KNOWN_VALID.lower()) is not None  # problem() does not normalise


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (KNOWN_VALID[:17], "length 17, expected 18"),
        (KNOWN_VALID + "1", "length 19, expected 18"),
        ("", "empty"),
        (None, "missing"),
        (KNOWN_VALID[:4] + "I" + KNOWN_VALID[5:], "character 'I' at position 5 is not allowed"),
        (KNOWN_VALID[:9] + "O" + KNOWN_VALID[10:], "character 'O' at position 10 is not allowed"),
        ("91A50100M000100Y43", "region code at positions 3-8 is not 6 digits"),
        (KNOWN_VALID[:17] + "X", "check character is 'X', expected '3'"),
        (
            "91350100M000100Y" + "5" + "3",
            "organisation code check character (position 17) is '5', expected '4'",
        ),
    ],
)
def test_problem_reasons(code, expected):
    got = uscc.problem(code)
    assert got is not None and got.startswith(expected), got
    assert not uscc.is_valid(code)


def test_lowercase_gets_a_hint():
    assert "normalise" in uscc.problem("91350100m000100Y43")


def test_generate_valid_unique_in_region():
    rng = np.random.default_rng(1)
    codes = uscc.generate(rng, 20_000, ["510104", "510107"], category="2")
    assert len(codes) == 20_000 and len(set(codes)) == 20_000
    assert all(uscc.is_valid(c) for c in codes[:2000])
    assert {c[2:8] for c in codes} == {"510104", "510107"}
    assert {c[:2] for c in codes} == {"92"}
    # Check characters agree with the independent reference implementation.
    for c in codes[:500]:
        assert c[17] == _reference_check(c[:17])


def test_generate_rejects_bad_regions():
    with pytest.raises(ConfigError, match="6-digit"):
        uscc.generate(np.random.default_rng(0), 5, ["51010"])


def test_every_single_character_substitution_is_detected():
    """The point of a check character: one mistyped character never passes."""
    code = uscc.generate(np.random.default_rng(3), 1, uscc.CHENGDU_REGIONS)[0]
    mutants = [
        code[:i] + ch + code[i + 1 :] for i in range(18) for ch in uscc.CHARSET if ch != code[i]
    ]
    verdicts = uscc.problems(mutants)
    assert all(v is not None for v in verdicts)
    adjacent_swaps = [
        code[:i] + code[i + 1] + code[i] + code[i + 2 :]
        for i in range(17)
        if code[i] != code[i + 1]
    ]
    assert all(v is not None for v in uscc.problems(adjacent_swaps))


def test_vectorised_agrees_with_scalar():
    rng = np.random.default_rng(5)
    good = list(uscc.generate(rng, 200, uscc.CHENGDU_REGIONS))
    bad = [
        good[0][:17],
        good[1].lower(),
        good[2][:17] + ("0" if good[2][17] != "0" else "1"),
        None,
        "",
        12345,
        good[3][:5] + "Z" + good[3][6:],
        good[4][:2] + "ABCDEF" + good[4][8:],
        float("nan"),
    ]
    batch = np.array(good + bad, dtype=object)
    got = uscc.problems(batch)
    assert all(g is None for g in got[: len(good)])
    for code, reason in zip(batch[len(good) :], got[len(good) :], strict=True):
        if code is None or (isinstance(code, float) and np.isnan(code)):
            assert reason == "missing"
        else:
            assert reason == uscc.problem(code) and reason is not None
    # plain numpy string arrays work too
    assert list(uscc.problems(np.array(good[:3]))) == [None, None, None]


def test_vectorised_validation_finds_the_one_bad_code_in_a_million():
    base = uscc.generate(np.random.default_rng(7), 100_000, uscc.CHENGDU_REGIONS)
    codes = np.tile(base, 10)
    codes[123_456] = codes[123_456][:17] + "Y" if codes[123_456][17] != "Y" else "0"
    out = uscc.problems(codes)
    assert np.flatnonzero(out != None).tolist() == [123_456]  # noqa: E711


def test_from_plain_id_distinct_valid_deterministic():
    ids = np.arange(1, 30_001)
    codes = uscc.from_plain_id(ids)
    assert len(set(codes)) == len(ids)
    assert uscc.problems(codes).tolist() == [None] * len(ids)
    assert {c[2:8] for c in codes} <= set(uscc.CHENGDU_REGIONS)
    # Same mapping whatever else is in the batch, and whether ids are numbers or text.
    sub = ids[[5, 17, 29_999]]
    assert list(uscc.from_plain_id(sub)) == list(codes[[5, 17, 29_999]])
    assert list(uscc.from_plain_id([str(i) for i in sub])) == list(codes[[5, 17, 29_999]])
    assert list(uscc.from_plain_id(list(sub))) == list(codes[[5, 17, 29_999]])
    # Another namespace is another mapping.
    other = uscc.from_plain_id(ids[:100], namespace="other")
    assert len(set(other) & set(codes[:100])) == 0


def test_from_plain_id_text_ids_and_collisions(monkeypatch):
    texts = [f"client-{i}" for i in range(2000)] + ["007", "client-3"]
    codes = uscc.from_plain_id(texts)
    assert codes[2001] == codes[3]  # same id, same code
    assert len(set(codes)) == 2001  # 2001 distinct ids
    assert all(uscc.is_valid(c) for c in codes)
    assert codes[2000] != uscc.from_plain_id([7])[0]  # '007' is text, not the integer 7

    # Force hash collisions by squeezing the hash into 3 values: the rule still gives
    # distinct, deterministic codes.
    real = uscc._hash_ints

    def squeezed(ids, namespace, salt=0):
        return real(ids, namespace, salt) % np.uint64(3) + np.uint64(salt * 3)

    monkeypatch.setattr(uscc, "_hash_ints", squeezed)
    few = ["a", "b", "c", "d", "e", "f"]
    first = uscc.from_plain_id(few)
    assert len(set(first)) == len(few)
    assert list(uscc.from_plain_id(list(reversed(few)))) == list(reversed(first))
