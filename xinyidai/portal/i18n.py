"""The portal's labels in Chinese (default) and English (``?lang=en``, or the toggle)."""

from __future__ import annotations

__all__ = ["LANGS", "label"]

LANGS = ("zh", "en")

_LABELS: dict[str, tuple[str, str]] = {
    "title": ("信易贷平台", "Xinyidai platform"),
    "sign_in": ("登录", "Sign in"),
    "sign_out": ("退出", "Sign out"),
    "login": ("统一社会信用代码或用户名", "USCC or login name"),
    "password": ("密码", "Password"),
    "bad_login": ("账号或密码错误", "Wrong login or password"),
    "rate_limited": (
        "登录失败次数过多，请稍后再试",
        "Too many failed sign-ins; try again later",
    ),
    "signed_in_as": ("当前账号", "Signed in as"),
    "nav_auth": ("授权管理", "Authorisations"),
    "nav_held": ("我的数据", "What is held about me"),
    "nav_access": ("使用记录", "Access list"),
    "nav_disputes": ("异议申诉", "Disputes"),
    "nav_auditor": ("审计", "Audit"),
    "nav_bank": ("本机构", "My institution"),
    "grant": ("授权", "Grant"),
    "revoke": ("撤销", "Revoke"),
    "bank": ("金融机构", "Bank"),
    "purpose": ("用途", "Purpose"),
    "purpose_financing": ("融资", "financing"),
    "categories": ("数据类别", "Data categories"),
    "valid_days": ("有效期（天）", "Validity (days)"),
    "valid_until": ("有效至", "Valid until"),
    "state": ("状态", "Status"),
    "auth_id": ("授权编号", "Authorisation id"),
    "no_auths": ("暂无授权", "No authorisations yet"),
    "granted": ("已授权", "Authorisation granted"),
    "revoked": ("已撤销", "Authorisation revoked"),
    "holder": ("数据源单位", "Data holder"),
    "column": ("数据项", "Item"),
    "value": ("值", "Value"),
    "category": ("类别", "Category"),
    "no_record": ("该单位未持有您的数据", "This holder holds no record of you"),
    "uses": ("使用情况（任务与模型版本）", "Used by (jobs and model versions)"),
    "when": ("时间 (UTC)", "When (UTC)"),
    "peer": ("对方", "Who"),
    "operation": ("操作", "Operation"),
    "decision": ("结果", "Decision"),
    "model": ("模型", "Model"),
    "no_access": ("暂无使用记录", "No access on record"),
    "file_dispute": ("提交异议", "File a dispute"),
    "dispute_text": ("异议内容与理由", "What you dispute, and why"),
    "all_data": ("全部数据", "all data"),
    "dispute_filed": ("异议已提交", "Dispute filed"),
    "status_open": ("处理中", "open"),
    "status_resolved": ("已处理", "resolved"),
    "status_repaired": ("已修复", "repaired"),
    "status_rejected": ("已驳回", "rejected"),
    "resolution": ("处理结果", "Resolution"),
    "no_disputes": ("暂无异议", "No disputes"),
    "did_not_answer": ("未响应", "did not answer"),
    "nodes": ("节点", "Nodes"),
    "witnessed_head": ("见证的审计链头", "Witnessed audit head"),
    "last_seen": ("最近见证", "Last witnessed"),
    "chain": ("链状态", "Chain status"),
    "institutions": ("接入机构", "Institutions"),
    "counts_per_bank": ("各机构统计（仅计数）", "Per bank (counts only)"),
    "lineage_reports": ("模型版本溯源报告", "Lineage reports of model versions"),
    "access_per_bank": (
        "各机构查询统计（数据持有方上报，仅计数）",
        "Requests per bank, as holders report them (counts only)",
    ),
    "enterprises": ("企业数", "Enterprises"),
    "admitted_status": ("接入状态", "Admitted status"),
    "authorised_by": ("授权本机构的企业", "Enterprises that authorised us"),
    "refused": ("已拒绝", "Refused"),
    "csrf": ("表单已失效，请重试", "The form expired; please try again"),
    "lang_other": ("English", "中文"),
}


def label(key: str, lang: str) -> str:
    """The label in ``lang`` (the key itself if unknown, so a missing label shows, not breaks)."""
    pair = _LABELS.get(key)
    if pair is None:
        return key
    return pair[1] if lang == "en" else pair[0]
