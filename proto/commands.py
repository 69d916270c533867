"""Requests other programs may publish on NATS instead of calling the HTTP API.

``DEPLOY_SUBJECT`` takes a ``DeployVirtualMachine`` as a NATS request and answers with a
``CommandAccepted`` (follow the job on the event stream, or with queryAsyncJobResult) or a
``CommandRejected`` carrying CloudStack's error code and text.
"""

from __future__ import annotations

import msgspec

DEPLOY_SUBJECT = "snapdeploy.api.deployVirtualMachine"


class DeployVirtualMachine(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The parameters of the API's deployVirtualMachine, acting as the key's owner."""

    apikey: str
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
    schema: int = 1


class CommandAccepted(msgspec.Struct, kw_only=True):
    id: str
    jobid: str


class CommandRejected(msgspec.Struct, kw_only=True):
    errorcode: int
    errortext: str
