"""The auditor's lineage report of one registered model version (Markdown + standalone HTML).

Why: an auditor asks "what is this model, what was it trained on, under whose consent, who put
it into production, and what has it been used for?". The answers are spread over MLflow (the
run: parameters, config, code version, each party's data digest, consent snapshots, crypto,
metrics; the registry: part digests, aliases, promotions) and every node's hash-chained audit
log (the training job's records, and each score request served with the version: records
whose ``model_id`` is ``"<name>/<version>"``). ``lineage_report`` gathers them into one file.

Each audit log is verified first (``AuditLog.verify``). A broken chain does not stop the
report: it is shown at the top and in the node's section, loudly, naming the node and every
problem, and the records read from that log are marked as untrusted. Anything missing from
MLflow (an artifact, a tag) is listed under "Findings" rather than failing.

Every value that came from MLflow or a log is escaped (HTML entities in both outputs, table
pipes in Markdown), so a crafted parameter or audit reason cannot inject markup.

- ``model``: the dataclasses the report is made of (no MLflow needed to render one).
- ``gather``: ``build_lineage`` (MLflow + audit logs → ``Lineage``, cross-checks as findings).
- ``sections``: one structure per report section, so both formats say the same.
- ``render``: Markdown, HTML, and writing the two files (``lineage_report``, ``write_report``).
"""

from xinyidai.lineage.gather import build_lineage
from xinyidai.lineage.model import DatasetInfo, Lineage, NodeAudit
from xinyidai.lineage.render import lineage_report, render_html, render_markdown, write_report

__all__ = [
    "DatasetInfo",
    "Lineage",
    "NodeAudit",
    "build_lineage",
    "lineage_report",
    "render_html",
    "render_markdown",
    "write_report",
]
