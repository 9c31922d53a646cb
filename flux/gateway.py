"""Who reaches an app in cluster mode: its Ingresses, the forward-auth to Nakama, and TLS.

Pure: values in, plain dicts out; :mod:`flux.manifests` puts them among the app's objects.

Each app has two Ingresses for ``<name>.<app_domain>``:

* ``<name>``: every path to the app's Service. A private or internal app is guarded by
  forward-auth: the Ingress controller asks Nakama's verify endpoint
  (``<nakama_internal_url>/gateway/verify``) about every request, passes it on when Nakama
  answers 2xx, copying ``X-Forwarded-User`` / ``X-Forwarded-Email`` from that answer onto the
  request (any copy the client sent is dropped first), and otherwise answers with Nakama's
  status. A public app has no forward-auth.
* ``<name>.nakama-gateway``: the prefix ``/_nakama/`` to the Service ``nakama-gateway`` (an
  ExternalName Service for Nakama's own, :func:`render_gateway_service`), never guarded: after
  sign-in Nakama sends the browser to ``https://<app host>/_nakama/callback``, which must reach
  Nakama before the viewer has the app's cookie. Annotations apply to a whole Ingress (both
  controllers), hence a second one. Its name has a dot, which no project name can have, so it
  can never be another app's Ingress.

What each controller is told (checked against their documentation and source; see the
comments at :func:`_nginx_auth` and :func:`_traefik_middleware`):

* ingress-nginx: annotations ``auth-url``, ``auth-signin`` and ``auth-response-headers``. A 401
  from verify redirects the browser to ``auth-signin``; a 403 is shown as nginx's 403 page.
* Traefik: a ``traefik.io/v1alpha1`` Middleware ``<name>-auth`` with ``forwardAuth``, named in
  the Ingress annotation ``traefik.ingress.kubernetes.io/router.middlewares``. Traefik has no
  sign-in redirect of its own: verify's non-2xx answer (status, headers, body) goes to the
  browser as it is, so for Traefik verify itself must answer a browser with the way to sign in.
  Traefik's Ingress provider serves ExternalName Services only with
  ``providers.kubernetesIngress.allowExternalNameServices=true``.
* ``none``: no forward-auth at all; the operator guards apps some other way.

TLS: with ``FluxSettings.cert_issuer`` the app Ingress asks cert-manager's ingress-shim for a
certificate in the Secret ``<name>-tls`` (annotation ``cert-manager.io/cluster-issuer``, and a
``tls`` section naming the host and Secret); else ``GitOpsLayout.tls_secret`` (a wildcard
certificate) is named; else plain HTTP. The ``/_nakama/`` Ingress names the same Secret without
the annotation, so the host has one certificate and one Certificate object.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from nakama.access import VISIBILITIES
from nakama.errors import InvalidInput
from nakama.settings import FluxSettings

TRAEFIK_API = "traefik.io/v1alpha1"
GATEWAY_SERVICE = "nakama-gateway"  # the ExternalName Service; no app may have this name
GATEWAY_PREFIX = "/_nakama/"  # Nakama's own paths on every app host (the sign-in callback)
VERIFY_PATH = "/gateway/verify"
SIGN_IN_PATH = "/gateway/sign-in"
AUTH_RESPONSE_HEADERS = ("X-Forwarded-User", "X-Forwarded-Email")
NGINX = "nginx.ingress.kubernetes.io"
TRAEFIK_MIDDLEWARES = "traefik.ingress.kubernetes.io/router.middlewares"
CLUSTER_ISSUER = "cert-manager.io/cluster-issuer"
GUARDED = ("private", "internal")  # the visibilities forward-auth guards
_DNS_SUBDOMAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


def gateway_ingress_name(name: str) -> str:
    """The Ingress of the app's ``/_nakama/`` paths."""
    return f"{name}.{GATEWAY_SERVICE}"


def middleware_name(name: str) -> str:
    """The Traefik Middleware guarding the app."""
    return f"{name}-auth"


def tls_secret_name(name: str) -> str:
    """The Secret cert-manager keeps the app's certificate in (with ``cert_issuer``)."""
    return f"{name}-tls"


def guarded(visibility: str, settings: FluxSettings) -> bool:
    """Whether the app's Ingress gets forward-auth."""
    return visibility in GUARDED and settings.ingress_controller != "none"


def gateway_problem(visibility: str, settings: FluxSettings) -> str | None:
    """What is wrong with the visibility or the gateway settings, as "<what>: <why>", or None."""
    if visibility not in VISIBILITIES:
        return f"visibility {visibility[:40]!r}: use one of {', '.join(VISIBILITIES)}"
    for field in ("nakama_internal_url", "nakama_public_url"):
        url = urlsplit(getattr(settings, field))
        if url.scheme not in ("http", "https") or not url.hostname:
            return f"{field}: must be an http(s) URL"
    if not _service_host(settings):
        return "nakama_internal_url: its host must be a DNS name (it becomes an ExternalName)"
    return None


def app_ingresses(
    name: str,
    *,
    host: str,
    namespace: str,
    visibility: str,
    settings: FluxSettings,
    tls_secret: str | None,
    meta: dict[str, Any],
) -> list[dict[str, Any]]:
    """The app's objects that route to it: the Middleware (Traefik, guarded apps only), the
    app Ingress and the ``/_nakama/`` Ingress. ``meta`` is the app's common metadata (name,
    namespace, labels); ``tls_secret`` the layout's wildcard Secret, if any."""
    secret = tls_secret_name(name) if settings.cert_issuer else tls_secret
    annotations: dict[str, str] = {}
    if settings.cert_issuer:
        annotations[CLUSTER_ISSUER] = settings.cert_issuer
    objects: list[dict[str, Any]] = []
    if guarded(visibility, settings):
        if settings.ingress_controller == "nginx":
            annotations.update(_nginx_auth(settings))
        else:
            middleware = _traefik_middleware(name, settings, meta)
            objects.append(middleware)
            ref = f"{namespace}-{middleware['metadata']['name']}@kubernetescrd"
            annotations[TRAEFIK_MIDDLEWARES] = ref
    app_backend = {"service": {"name": name, "port": {"name": "http"}}}
    port = _service_port(settings)
    nakama_backend = {"service": {"name": GATEWAY_SERVICE, "port": {"number": port}}}
    objects.append(_ingress(meta, annotations, host, "/", app_backend, settings, secret))
    callback = {**meta, "name": gateway_ingress_name(name)}
    objects.append(_ingress(callback, {}, host, GATEWAY_PREFIX, nakama_backend, settings, secret))
    return objects


def gateway_file(kustomizations_path: str) -> str:
    """Where :func:`render_gateway_service` goes in the GitOps repository: beside the apps' Flux
    Kustomizations, so that the bootstrap Kustomization applying those applies it too. No app
    may be named nakama-gateway, so the file is never an app's."""
    return f"{kustomizations_path.strip('/')}/{GATEWAY_SERVICE}.yaml"


def render_gateway_service(settings: FluxSettings, *, namespace: str) -> dict[str, Any]:
    """The Service ``nakama-gateway`` in the apps' namespace: an ExternalName for the host of
    ``nakama_internal_url``, on its port. Shared by every app's ``/_nakama/`` Ingress (an
    Ingress reaches Services of its own namespace only), so it is rendered once, not per app:
    two Flux Kustomizations applying one object take its ownership from each other, and
    pruning either app could delete it under the rest."""
    problem = gateway_problem("private", settings)
    if problem:
        raise InvalidInput(f"invalid {problem}")
    labels = {"app.kubernetes.io/name": GATEWAY_SERVICE, "app.kubernetes.io/managed-by": "nakama"}
    port = {"name": "http", "port": _service_port(settings), "protocol": "TCP"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": GATEWAY_SERVICE, "namespace": namespace, "labels": labels},
        "spec": {"type": "ExternalName", "externalName": _service_host(settings), "ports": [port]},
    }


def _ingress(
    meta: dict[str, Any],
    annotations: dict[str, str],
    host: str,
    path: str,
    backend: dict[str, Any],
    settings: FluxSettings,
    tls_secret: str | None,
) -> dict[str, Any]:
    metadata = {**meta, "labels": dict(meta["labels"])}
    if annotations:
        metadata["annotations"] = dict(annotations)
    spec: dict[str, Any] = {}
    if settings.ingress_class:
        spec["ingressClassName"] = settings.ingress_class
    paths = [{"path": path, "pathType": "Prefix", "backend": backend}]
    spec["rules"] = [{"host": host, "http": {"paths": paths}}]
    if tls_secret:
        spec["tls"] = [{"hosts": [host], "secretName": tls_secret}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": spec,
    }


def _nginx_auth(settings: FluxSettings) -> dict[str, str]:
    """ingress-nginx's external authentication, as its annotations page ("External
    Authentication", docs/user-guide/nginx-configuration/annotations.md in kubernetes/ingress-nginx)
    and the oauth-external-auth example name them. nginx sends the verify request the original
    URL as ``X-Original-URL``. Its template (``buildAuthSignURL``) adds
    ``rd=$pass_access_scheme://$http_host$escaped_request_uri`` itself only when the sign-in URL
    has no ``rd``; ours has one, which nginx then uses verbatim. ``auth-response-headers`` makes
    nginx ``proxy_set_header`` each one from verify's answer, replacing the client's copy."""
    public = settings.nakama_public_url.rstrip("/")
    return {
        f"{NGINX}/auth-url": settings.nakama_internal_url.rstrip("/") + VERIFY_PATH,
        f"{NGINX}/auth-signin": f"{public}{SIGN_IN_PATH}?rd=$scheme://$host$escaped_request_uri",
        f"{NGINX}/auth-response-headers": ",".join(AUTH_RESPONSE_HEADERS),
    }


def _traefik_middleware(name: str, settings: FluxSettings, meta: dict[str, Any]) -> dict[str, Any]:
    """Traefik's ForwardAuth, with the fields of its Middleware CRD
    (traefik/traefik docs/content/reference/dynamic-configuration/traefik.io_middlewares.yaml,
    ``spec.forwardAuth``: ``address``, ``authResponseHeaders``, ``trustForwardHeader``) and the
    behaviour of pkg/middlewares/auth/forward.go: a GET to ``address`` with ``X-Forwarded-Proto``,
    ``-Host`` and ``-Uri`` of the request (set by Traefik, not the client's, as
    ``trustForwardHeader`` is false), every request header passed (no ``authRequestHeaders``);
    on 2xx each ``authResponseHeaders`` header is deleted from the request and copied from the
    answer. The Ingress names it ``<namespace>-<name>@kubernetescrd`` (Traefik's "Kubernetes
    Routers - Ingress" reference; with the provider's ``safeNaming`` it would be
    ``<namespace>_<name>``, which Nakama does not support)."""
    forward = {
        "address": settings.nakama_internal_url.rstrip("/") + VERIFY_PATH,
        "authResponseHeaders": list(AUTH_RESPONSE_HEADERS),
        "trustForwardHeader": False,
    }
    metadata = {**meta, "name": middleware_name(name), "labels": dict(meta["labels"])}
    return {
        "apiVersion": TRAEFIK_API,
        "kind": "Middleware",
        "metadata": metadata,
        "spec": {"forwardAuth": forward},
    }


def _service_host(settings: FluxSettings) -> str | None:
    """The host of ``nakama_internal_url`` if it can be an ExternalName (a DNS name)."""
    host = (urlsplit(settings.nakama_internal_url).hostname or "").rstrip(".")
    if not host or set(host) - _DNS_SUBDOMAIN_CHARS or host.replace(".", "").isdigit():
        return None
    return host


def _service_port(settings: FluxSettings) -> int:
    url = urlsplit(settings.nakama_internal_url)
    return url.port or (443 if url.scheme == "https" else 80)
