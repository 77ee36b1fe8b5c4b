"""A stand-in for the Azure Key Vault secrets REST API plus a managed-identity token endpoint.

The vault speaks HTTPS (throwaway CA, see :mod:`certs`) and the token endpoint speaks the App
Service managed-identity protocol, so the real ``SecretClient`` with the real
``DefaultAzureCredential()`` talk to it once the process has :meth:`KeyVaultService.env`.
Create the client with ``verify_challenge_resource=False``: the challenge names vault.azure.net.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import hmac
import json
import secrets as _secrets
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .certs import make_server_cert

IDENTITY_OBJECT_ID = "5f0c6d1e-3b7a-4c2e-9d8f-0a1b2c3d4e5f"
IDENTITY_CLIENT_ID = "8a4f1c2d-6e5b-4a39-b7c8-1d2e3f405162"
TENANT_ID = "72f988bf-0000-4000-8000-0000000000ab"
RESOURCE = "https://vault.azure.net"
VAULT_NAME = "odibi-emulator"
TOKEN_PATH = "/metadata/identity/oauth2/token"

_CHALLENGE = (
    f'Bearer authorization="https://login.microsoftonline.com/{TENANT_ID}", resource="{RESOURCE}"'
)
_CALLER = (
    f"appid={IDENTITY_CLIENT_ID};oid={IDENTITY_OBJECT_ID};iss=https://sts.windows.net/{TENANT_ID}/"
)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _error(code: str, message: str, inner: str | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if inner:
        err["innererror"] = {"code": inner}
    return {"error": err}


def _not_found(name: str) -> dict[str, Any]:
    return _error(
        "SecretNotFound",
        f"A secret with (name/id) {name} was not found in this key vault. If you recently "
        "deleted this secret you may be able to recover it using the correct recovery command. "
        "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
    )


def _forbidden(name: str, rbac: bool) -> dict[str, Any]:
    if rbac:
        message = (
            "Caller is not authorized to perform action on resource.\r\n"
            "If role assignments, deny assignments or role definitions were changed recently, "
            "please observe propagation time.\r\n"
            f"Caller: {_CALLER}\r\n"
            "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\n"
            "Resource: '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/"
            f"odibi/providers/microsoft.keyvault/vaults/{VAULT_NAME}/secrets/{name.lower()}'\r\n"
            "Assignment: (not found)\r\n"
            "DenyAssignmentId: null\r\n"
            "DecisionReason: null \r\n"
            f"Vault: {VAULT_NAME};location=westeurope\r\n"
        )
        return _error("Forbidden", message, "ForbiddenByRbac")
    message = (
        f"The user, group or application '{_CALLER}' does not have secrets get permission on "
        f"key vault '{VAULT_NAME};location=westeurope'. For help resolving this issue, please "
        "see https://go.microsoft.com/fwlink/?linkid=2125287"
    )
    return _error("Forbidden", message, "ForbiddenByPolicy")


class _Server(ThreadingHTTPServer):
    """Threaded server bound to 127.0.0.1; optional TLS handshake in the worker thread."""

    daemon_threads = True

    def __init__(self, port: int, handler: type, service: KeyVaultService) -> None:
        self.service = service
        self.tls: ssl.SSLContext | None = None
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        conn = request
        try:
            if self.tls is not None:  # handshake here, in the worker thread
                conn = self.tls.wrap_socket(request, server_side=True)
            with self.conns_lock:
                self.conns.add(conn)
            super().finish_request(conn, client_address)
        except OSError:
            pass  # client went away or rejected the certificate (ssl.SSLError is an OSError)
        finally:
            with self.conns_lock:
                self.conns.discard(conn)
            if conn is not request:
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass

    def close_connections(self) -> None:
        with self.conns_lock:
            conns = list(self.conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""


class _VaultHandler(_Handler):
    def _handle(self) -> None:
        raw = self._body()
        path = urlsplit(self.path).path
        svc = self.server.service
        auth = self.headers.get("Authorization")
        if auth is None or not svc._token_ok(auth.removeprefix("Bearer ")):
            message = (
                "AKV10000: Request is missing a Bearer or PoP token."
                if auth is None
                else "AKV10022: Invalid audience, issuer or signature."
            )
            svc._record(self.command, path, 401, secret_get=False)
            self._reply(401, _error("Unauthorized", message), {"WWW-Authenticate": _CHALLENGE})
            return
        with svc._lock:
            fault = svc._faults.pop(0) if svc._faults else None
        if fault is not None:
            time.sleep(fault[1])
            status, body = fault[0], _error("ServiceUnavailable", "The service is busy.")
        else:
            status, body = svc._serve(self.command, path, raw, self.headers.get("Host", ""))
        svc._record(self.command, path, status, secret_get=self.command == "GET")
        self._reply(status, body)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _handle


class _IdentityHandler(_Handler):
    def do_GET(self) -> None:
        svc = self.server.service
        with svc._lock:
            svc.token_requests += 1
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path != TOKEN_PATH:
            self._reply(404, {"error": "not_found"})
        elif self.headers.get("X-IDENTITY-HEADER") != svc.identity_header:
            self._reply(401, {"error": "unauthorized", "error_description": "bad identity header"})
        elif "resource" not in query or "api-version" not in query:
            self._reply(400, {"error": "invalid_request", "error_description": "resource?"})
        else:
            resource = query["resource"][0]
            expires_on = int(time.time()) + 3600
            token = svc._issue_token(resource, expires_on)
            self._reply(
                200,
                {
                    "access_token": token,
                    "expires_on": str(expires_on),
                    "resource": resource,
                    "token_type": "Bearer",
                    "client_id": IDENTITY_CLIENT_ID,
                },
            )


@dataclass(eq=False)
class KeyVaultService:
    """A running vault stand-in; state lives in this process, the servers in its threads."""

    url: str
    ca_bundle: str
    identity_endpoint: str
    identity_header: str
    secret_gets: int = 0
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    token_requests: int = 0
    _secrets: dict[str, list[dict[str, Any]]] = field(default_factory=dict, repr=False)
    _forbidden: dict[str, bool] = field(default_factory=dict, repr=False)
    _faults: list[tuple[int, float]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _signing_key: bytes = field(default_factory=lambda: _secrets.token_bytes(32), repr=False)
    _servers: list[_Server] = field(default_factory=list, repr=False)

    # -- server-side control -------------------------------------------------------------
    def set_secret(self, name: str, value: str) -> None:
        """Store a new version of ``name`` (no HTTP)."""
        self._put(name, {"value": value}, self.url)

    def delete_secret(self, name: str) -> None:
        """Forget ``name`` and all its versions."""
        with self._lock:
            self._secrets.pop(name.lower(), None)

    def forbid(self, name: str, rbac: bool = True) -> None:
        """Make GET of ``name`` answer 403 (RBAC or access-policy flavour)."""
        with self._lock:
            self._forbidden[name.lower()] = rbac

    def allow(self, name: str) -> None:
        """Undo :meth:`forbid`."""
        with self._lock:
            self._forbidden.pop(name.lower(), None)

    def fail_next(self, count: int, status: int = 503, delay: float = 0.0) -> None:
        """Make the next ``count`` authenticated requests wait ``delay`` seconds, then
        answer ``status`` (a transient failure, or a hang when the delay is long)."""
        with self._lock:
            self._faults.extend([(status, delay)] * count)

    def reset_counts(self) -> None:
        """Zero ``secret_gets``, ``requests`` and ``token_requests``."""
        with self._lock:
            self.secret_gets = 0
            self.requests = []
            self.token_requests = 0

    def env(self) -> dict[str, str]:
        """What a process needs so DefaultAzureCredential + SecretClient reach this vault."""
        return {
            "IDENTITY_ENDPOINT": self.identity_endpoint,
            "IDENTITY_HEADER": self.identity_header,
            "REQUESTS_CA_BUNDLE": self.ca_bundle,
        }

    def stop(self) -> None:
        """Shut both servers down (idempotent)."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.shutdown()
            server.close_connections()
            server.server_close()

    # -- internals -----------------------------------------------------------------------
    def _record(self, method: str, path: str, status: int, secret_get: bool) -> None:
        with self._lock:
            self.requests.append((method, path, status))
            if secret_get and path.startswith("/secrets/"):
                self.secret_gets += 1

    def _sign(self, signing_input: str) -> str:
        return _b64url(hmac.new(self._signing_key, signing_input.encode(), hashlib.sha256).digest())

    def _issue_token(self, resource: str, expires_on: int) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "HS256"}
        payload = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{TENANT_ID}/",
            "iat": now,
            "nbf": now,
            "exp": expires_on,
            "appid": IDENTITY_CLIENT_ID,
            "oid": IDENTITY_OBJECT_ID,
            "sub": IDENTITY_OBJECT_ID,
            "tid": TENANT_ID,
            "idtyp": "app",
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload)
        )
        return f"{signing_input}.{self._sign(signing_input)}"

    def _token_ok(self, token: str) -> bool:
        try:
            head, payload, signature = token.split(".")
            if not hmac.compare_digest(signature, self._sign(f"{head}.{payload}")):
                return False
            claims = json.loads(_b64url_decode(payload))
        except (ValueError, TypeError):  # TypeError: non-ASCII text in compare_digest
            return False
        return bool(claims.get("aud") == RESOURCE and claims.get("exp", 0) > time.time())

    def _put(self, name: str, body: dict[str, Any], base_url: str) -> dict[str, Any]:
        version = uuid.uuid4().hex
        now = int(time.time())
        bundle: dict[str, Any] = {
            "value": body["value"],
            "id": f"{base_url}/secrets/{name}/{version}",
            "attributes": {
                "enabled": True,
                "created": now,
                "updated": now,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": body.get("tags") or {},
        }
        if body.get("contentType"):
            bundle["contentType"] = body["contentType"]
        with self._lock:
            self._secrets.setdefault(name.lower(), []).append(bundle)
        return bundle

    def _serve(self, method: str, path: str, raw: bytes, host: str) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.split("/") if p]
        if len(parts) not in (2, 3) or parts[0] != "secrets":
            return 400, _error("BadParameter", f"The request URI {path} is not supported.")
        name = parts[1]
        if method == "PUT" and len(parts) == 2:
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("value"), str):
                return 400, _error("BadParameter", "Property 'value' is required.")
            return 200, self._put(name, body, f"https://{host}" if host else self.url)
        if method != "GET":
            return 405, _error("MethodNotAllowed", f"{method} {path} is not supported.")
        version = parts[2] if len(parts) == 3 else ""
        with self._lock:
            rbac = self._forbidden.get(name.lower())
            versions = list(self._secrets.get(name.lower(), []))
        if rbac is not None:
            return 403, _forbidden(name, rbac)
        if version:
            found = next((b for b in versions if b["id"].endswith("/" + version)), None)
        else:
            found = versions[-1] if versions else None
        if found is None:
            return 404, _not_found(f"{name}/{version}" if version else name)
        return 200, found


def start_keyvault(workdir: Path, port: int = 0, identity_port: int = 0) -> KeyVaultService:
    """Start the vault (HTTPS) and token endpoint (HTTP) on 127.0.0.1 in daemon threads."""
    cert = make_server_cert(Path(workdir) / "keyvault-tls")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert.cert, cert.key)
    svc = KeyVaultService(
        url="",
        ca_bundle=str(cert.ca_bundle),
        identity_endpoint="",
        identity_header=_secrets.token_urlsafe(24),
    )
    vault = _Server(port, _VaultHandler, svc)
    vault.tls = tls
    identity = _Server(identity_port, _IdentityHandler, svc)
    svc.url = f"https://127.0.0.1:{vault.server_address[1]}"
    svc.identity_endpoint = f"http://127.0.0.1:{identity.server_address[1]}{TOKEN_PATH}"
    for server, label in ((vault, "vault"), (identity, "identity")):
        svc._servers.append(server)
        threading.Thread(target=server.serve_forever, name=f"keyvault-{label}", daemon=True).start()
    atexit.register(svc.stop)
    return svc
