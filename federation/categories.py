"""The data categories of the sharing lists: the vocabulary authorisations, requests and reason
codes share.

Why in the runtime: a category travels on the wire (``CheckAuthorisation.categories``, reason
codes of a score) and orders reasons in ``models.scorecard``; the tables that assign columns to
categories live with the data schemas (``parties.data.schema``).
"""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = ("identity", "tax", "electricity", "water", "gas", "bank", "label")
"""Every data category, in the order reasons and reports list them."""
