"""The part of Traefik's Middleware CRD that Nakama renders, for :mod:`flux.validate`.

The reference folder holds Flux's CRDs only, so this is copied by hand from Traefik's own,
``docs/content/reference/dynamic-configuration/traefik.io_middlewares.yaml`` in traefik/traefik
(group ``traefik.io``, version ``v1alpha1``, kind ``Middleware``, namespaced): the
``openAPIV3Schema`` cut down to ``spec.forwardAuth`` and its fields, with their types as there.
Every other middleware is left out, so a Middleware using one fails validation as an unknown
field: Nakama renders none, and one that appears is a mistake worth seeing.
"""

from __future__ import annotations

from typing import Any

_STRINGS = {"type": "array", "items": {"type": "string"}}

MIDDLEWARE_OPENAPI: dict[str, Any] = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "apiVersion": {"type": "string", "enum": ["traefik.io/v1alpha1"]},
        "kind": {"type": "string", "enum": ["Middleware"]},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "forwardAuth": {
                    "type": "object",
                    # Traefik needs an address (its docs: "Required: Yes"); the CRD does not say.
                    "required": ["address"],
                    "properties": {
                        "addAuthCookiesToResponse": _STRINGS,
                        "address": {"type": "string", "minLength": 1},
                        "authRequestHeaders": _STRINGS,
                        "authResponseHeaders": _STRINGS,
                        "authResponseHeadersRegex": {"type": "string"},
                        "trustForwardHeader": {"type": "boolean"},
                        "tls": {
                            "type": "object",
                            "properties": {
                                "caSecret": {"type": "string"},
                                "certSecret": {"type": "string"},
                                "insecureSkipVerify": {"type": "boolean"},
                            },
                        },
                    },
                },
            },
        },
    },
}
