"""The NATS door: deploy requests published by other programs, answered like the API.

A request is authenticated as an HTTP call is: its signature over the call's parameters is
checked against the API key's secret (``caller_for``, the HTTP API's own check), and it must
carry ``expires`` (signature version 3). Knowing an API key, the public half of a key pair,
deploys nothing.
"""

from __future__ import annotations

import logging
import uuid

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from proto.commands import DEPLOY_SUBJECT, CommandRejected, DeployVirtualMachine
from services.gateway.api import (
    AUTH_ERROR,
    INTERNAL_ERROR,
    PARAM_ERROR,
    ApiError,
    Context,
    Params,
)
from services.gateway.http import AUTH_FAILED, caller_for
from shared import metrics
from shared.log import correlation

log = logging.getLogger(__name__)
_decoder = msgspec.json.Decoder(DeployVirtualMachine)
_encoder = msgspec.json.Encoder()


async def serve_deploys(nc: NATS, ctx: Context) -> None:
    """Answer deploy requests on ``DEPLOY_SUBJECT`` (queue group ``gateway``)."""

    async def on_request(msg: Msg) -> None:
        request_id = str(uuid.uuid4())
        with correlation(request_id):
            try:
                reply = await handle(ctx, msg.data)
            except Exception:
                log.exception("deploy request on NATS failed")
                reply = CommandRejected(errorcode=INTERNAL_ERROR, errortext=(
                    f"internal error; the gateway's log has it under {request_id}"))
            if msg.reply:
                try:
                    await msg.respond(_encoder.encode(reply))
                except Exception:
                    log.exception("could not answer a deploy request on NATS")

    await nc.subscribe(DEPLOY_SUBJECT, queue="gateway", cb=on_request)
    log.info("answering deploy requests on NATS subject %s", DEPLOY_SUBJECT)


async def handle(ctx: Context, data: bytes) -> msgspec.Struct:
    from services.gateway.commands.vms import deploy_params, submit_deploy

    try:
        request = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        metrics.MALFORMED_MESSAGES.labels("gateway").inc()
        return CommandRejected(errorcode=PARAM_ERROR,
                               errortext=f"malformed request: {str(exc)[:200]}")
    try:
        if not request.signature or not request.expires:
            raise ApiError(AUTH_ERROR, f"{AUTH_FAILED}: a request on NATS must be signed, "
                           "with signatureversion 3 and expires")
        caller = await caller_for(ctx, [*request.signed_params(),
                                        ("signature", request.signature)])
        # The same checks as the HTTP API's parameters.
        checked = deploy_params(Params("deployVirtualMachine", request.fields()),
                                request.apikey)
        accepted = await submit_deploy(ctx, caller, checked)
    except ApiError as exc:
        return CommandRejected(errorcode=exc.code, errortext=exc.text)
    log.info("accepted deploy %s (job %s) from NATS", accepted.id, accepted.jobid)
    return accepted
