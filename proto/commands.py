"""Requests other programs may publish on NATS instead of calling the HTTP API.

``DEPLOY_SUBJECT`` takes a ``DeployVirtualMachine`` as a NATS request and answers with a
``CommandAccepted`` (follow the job on the event stream, or with queryAsyncJobResult) or a
``CommandRejected`` carrying CloudStack's error code and text.

A request is signed as the HTTP API's ``deployVirtualMachine`` is with ``signatureVersion=3``:
``signature`` signs ``signed_params()`` (the command, the API key, ``expires``,
``signatureversion`` and every field that is set) with the key's secret, as
``services.gateway.auth.sign`` does; ``expires`` is required. A missing or wrong signature,
or an expired request, is answered with a 401.
"""

from __future__ import annotations

import msgspec

DEPLOY_SUBJECT = "snapdeploy.api.deployVirtualMachine"
SIGNATURE_VERSION = "3"
# Fields of a request that its signature does not cover.
UNSIGNED = frozenset({"signature", "expires", "schema"})


class DeployVirtualMachine(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The parameters of the API's deployVirtualMachine, acting as the key's owner."""

    apikey: str
    # base64 HMAC-SHA1 of signed_params() with the secret key; see the module's text.
    signature: str = ""
    # When the signature stops being accepted: ISO-8601 with a zone, e.g.
    # 2026-11-28T10:00:00+0000 (at most the server's signature_max_expiry_s ahead).
    expires: str = ""
    serviceofferingid: str
    vmsnapshotid: str | None = None
    templateid: str | None = None
    zoneid: str | None = None
    hostid: str | None = None
    networkids: list[str] = []
    name: str | None = None
    displayname: str | None = None
    # The caller's own key for this request: sending it again (a retry after a lost answer)
    # returns the first request's VM and job instead of deploying another VM.
    requestid: str | None = None
    # startvm=false leaves the new VM Stopped (default: started).
    startvm: bool | None = None
    # A data disk of this disk offering is made and attached to the new VM.
    diskofferingid: str | None = None
    # An administrator deploys for the account of this name (in domainid: ROOT).
    account: str | None = None
    domainid: str | None = None
    schema: int = 1

    def fields(self) -> dict[str, str]:
        """The deploy's parameters that are set, as the HTTP API takes them (lists joined
        with commas); neither the credentials nor ``schema``."""
        out = {}
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name in UNSIGNED or name == "apikey" or value in (None, []):
                continue
            out[name] = ",".join(value) if isinstance(value, list) else \
                str(value).lower() if isinstance(value, bool) else str(value)
        return out

    def signed_params(self) -> list[tuple[str, str]]:
        """What ``signature`` signs: the HTTP API's parameters of the same call."""
        return [("command", "deployVirtualMachine"), ("apikey", self.apikey),
                ("expires", self.expires), ("signatureversion", SIGNATURE_VERSION),
                *self.fields().items()]


class CommandAccepted(msgspec.Struct, kw_only=True):
    id: str
    jobid: str


class CommandRejected(msgspec.Struct, kw_only=True):
    errorcode: int
    errortext: str
