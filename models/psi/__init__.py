"""Alignment by private set intersection, as a protocol like the others: bank half and holder half.

``active`` is the bank's half (it drives the job: ``align_codes``, its stored ``Alignment``),
``passive`` the holder's (``PsiHolderHandlers``, served on the holder's ``DataHolder`` port),
``store`` where each side's rows of the common set are kept and checked. The maths lives in the
runtime (``federation.psi``); carrying its messages between nodes is what this package adds.
Protocol and who-learns-what: docs/psi.md.
"""

from models.psi.active import Alignment, align_codes
from models.psi.passive import PsiHolderHandlers
from models.psi.store import AlignmentError, AlignmentStore, PsiSessions, codes_digest

__all__ = [
    "Alignment",
    "AlignmentError",
    "AlignmentStore",
    "PsiHolderHandlers",
    "PsiSessions",
    "align_codes",
    "codes_digest",
]
