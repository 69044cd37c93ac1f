"""The portal's configuration (parties.config.PortalConfig): embedded sign-in by default,
OIDC only when complete, and only on a platform node."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from federation.errors import ConfigError
from parties.config import PortalAuthConfig, PortalConfig, load_node_config

BASE = """node_id: platform
role: {role}
tls: {{ca: ca.pem, cert: node.pem, key: node.key}}
platform_signing_key: signing.key
platform_public_key: signing.pub
"""


def _write(tmp_path: Path, portal: str, role: str = "platform") -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(BASE.format(role=role) + portal)
    return path


def test_embedded_is_the_default_and_paths_resolve(tmp_path: Path) -> None:
    config = load_node_config(_write(tmp_path, "portal: {address: 127.0.0.1:8080}\n"))
    assert config.portal is not None and config.portal.auth.kind == "embedded"
    assert not config.portal.cookies_secure
    config = load_node_config(_write(tmp_path, "portal: {tls_cert: p.pem, tls_key: p.key}\n"))
    assert config.portal is not None and config.portal.cookies_secure
    assert config.portal.tls_cert == (tmp_path / "p.pem").resolve()


@pytest.mark.parametrize(
    ("auth", "problem"),
    [
        ("{kind: oidc, issuer: https://id.example, client_id: x}", "client_secret_file"),
        ("{kind: oidc, client_id: x, client_secret_file: s}", "issuer"),
        ("{kind: oidc, issuer: http://id.example, client_id: x, client_secret_file: s}", "https"),
        ("{kind: embedded, issuer: https://id.example}", "belong to kind 'oidc'"),
        ("{kind: saml}", "auth.kind"),
    ],
)
def test_incomplete_oidc_is_refused_naming_the_field(
    tmp_path: Path, auth: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_node_config(_write(tmp_path, f"portal: {{auth: {auth}}}\n"))
    assert problem in str(caught.value) and "node.yaml" in str(caught.value)


def test_a_portal_belongs_to_a_platform_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="platform node"):
        load_node_config(_write(tmp_path, "portal: {}\n", role="bank"))


def test_tls_needs_both_files() -> None:
    with pytest.raises(ValueError, match="both"):
        PortalConfig(tls_cert=Path("p.pem"))


@pytest.mark.filterwarnings("ignore:The httpx module is deprecated")  # Authlib's own notice
def test_oidc_client_builds_from_a_private_secret_and_refuses_a_readable_one(
    tmp_path: Path,
) -> None:
    from xinyidai.portal.oidc import oidc_client  # Authlib: imported only for OIDC

    secret = tmp_path / "oidc_secret"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o644)
    auth = PortalAuthConfig(
        kind="oidc", issuer="https://id.example", client_id="portal", client_secret_file=secret
    )
    with pytest.raises(ConfigError, match="readable by others"):
        oidc_client(auth)
    os.chmod(secret, 0o600)
    client = oidc_client(auth)  # no network until someone signs in
    assert client.client_id == "portal"
    assert client._server_metadata_url == "https://id.example/.well-known/openid-configuration"
