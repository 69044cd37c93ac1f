"""Who can vouch for a node's chain: anyone who recorded one of its heads.

Why: a node's own head row cannot stop its operator from rewriting the tail consistently (the
hash is keyless). Every call carries the sender's head and every reply the callee's, and each
side writes the head it received into its own record of the call; so every peer holds heads of
this node's chain that this node cannot edit. ``AuditLog.verify(witnesses=...)`` checks each
one is still in the chain.

The hook: a ``Witness`` is anything that can list the heads of a node it saw. A peer's audit
log (``AuditLog.heads_of``) is one; the platform node, when it collects heads, is the next.
"""

from __future__ import annotations

from typing import Protocol

from federation.audit.chain import ChainHead


class Witness(Protocol):
    """A holder of heads of other nodes' chains (a peer's log today; the platform later)."""

    @property
    def node_id(self) -> str:
        """Who witnessed: named in every problem a witnessed head reveals."""
        ...

    def heads_of(self, node_id: str) -> list[ChainHead]:
        """Every head of ``node_id``'s chain this witness saw (``SEQ:HASH``), oldest first."""
        ...
