"""Private set intersection (PSI) of enterprise codes (USCC) between the bank and data holders.

Vertical federated learning must first agree which enterprises both sides hold, without either
side learning the other's non-shared enterprises. This is the Diffie-Hellman (ECDH) PSI of
Meadows/Huberman-Franklin-Hogg, one oblivious PRF per bank code, over Curve25519 (X25519):

    H(c)   = hash of a code to a Curve25519 point (sha512, try-and-increment; see ``docs/psi.md``)
    holder : T = sorted(trunc16(X25519(b, H(y))) for y in holder codes)   -> bank   (cacheable)
    bank   : Q = [X25519(a, H(x)) for x in bank codes]                     -> holder
    holder : D = [X25519(b, q) for q in Q]                                  -> bank
    bank   : t_x = trunc16(X25519(a^-1, D_x)) = trunc16(X25519(b, H(x)));  match t_x in T
    bank   : positions in T of the matches, in ascending-code order         -> holder

Each party's half is a class whose steps take and return raw ``bytes`` (fixed-width records:
32-byte points, 16-byte tags, 4-byte little-endian positions), so any transport can carry them
and nothing crossing between parties is ever pickled. The group work runs on all cores in
chunks; the secret scalars stay inside the party object (and the holder's cache file).

Modules: ``codes`` (normalising USCCs), ``curve`` (hashing to points, blinding, scalars),
``workers`` (the process pool), ``cache`` (the holder's blinded-set file), ``holder`` and
``bank`` (the two halves), ``results``, ``local`` (both halves in one process), ``errors``.
Carrying the messages between nodes is the caller's business (``models.psi``).
"""

from federation.psi.bank import DEFAULT_MAX_HOLDER_SET, PsiBank
from federation.psi.codes import CODE_LEN, USCC_CHARSET, normalise_codes
from federation.psi.curve import DOMAIN, POINT_BYTES, hash_code_point
from federation.psi.errors import (
    PsiCacheError,
    PsiError,
    PsiInputError,
    PsiOverlapError,
    PsiProtocolError,
)
from federation.psi.holder import DEFAULT_CACHE_MAX_AGE, DEFAULT_MAX_QUERIES, PsiHolder
from federation.psi.local import align_local, run_psi_local
from federation.psi.results import (
    POSITION_BYTES,
    TAG_BYTES,
    LocalAlignment,
    LocalPsi,
    PsiAlignment,
    PsiResult,
    PsiStats,
)
from federation.psi.workers import PARALLEL_MIN, shutdown_workers

__all__ = [
    "CODE_LEN",
    "DEFAULT_CACHE_MAX_AGE",
    "DEFAULT_MAX_HOLDER_SET",
    "DEFAULT_MAX_QUERIES",
    "DOMAIN",
    "PARALLEL_MIN",
    "POINT_BYTES",
    "POSITION_BYTES",
    "TAG_BYTES",
    "USCC_CHARSET",
    "LocalAlignment",
    "LocalPsi",
    "PsiAlignment",
    "PsiBank",
    "PsiCacheError",
    "PsiError",
    "PsiHolder",
    "PsiInputError",
    "PsiOverlapError",
    "PsiProtocolError",
    "PsiResult",
    "PsiStats",
    "align_local",
    "hash_code_point",
    "normalise_codes",
    "run_psi_local",
    "shutdown_workers",
]
