"""The NATS door: deploy requests published by other programs, answered like the API."""

from __future__ import annotations

import logging
import uuid

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from proto.commands import DEPLOY_SUBJECT, CommandRejected, DeployVirtualMachine
from services.gateway.api import AUTH_ERROR, PARAM_ERROR, ApiError, Context
from services.gateway.http import AUTH_FAILED, caller_by_key
from shared import metrics
from shared.log import correlation

log = logging.getLogger(__name__)
_decoder = msgspec.json.Decoder(DeployVirtualMachine)
_encoder = msgspec.json.Encoder()


async def serve_deploys(nc: NATS, ctx: Context) -> None:
    """Answer deploy requests on ``DEPLOY_SUBJECT`` (queue group ``gateway``)."""

    async def on_request(msg: Msg) -> None:
        with correlation(str(uuid.uuid4())):
            reply = await handle(ctx, msg.data)
            if msg.reply:
                await msg.respond(_encoder.encode(reply))

    await nc.subscribe(DEPLOY_SUBJECT, queue="gateway", cb=on_request)
    log.info("answering deploy requests on NATS subject %s", DEPLOY_SUBJECT)


async def handle(ctx: Context, data: bytes) -> msgspec.Struct:
    from services.gateway.commands.vms import submit_deploy

    try:
        request = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        metrics.MALFORMED_MESSAGES.labels("gateway").inc()
        return CommandRejected(errorcode=PARAM_ERROR, errortext=f"malformed request: {exc}")
    try:
        caller = await caller_by_key(ctx, request.apikey)
        if caller is None:
            raise ApiError(AUTH_ERROR, AUTH_FAILED)
        accepted = await submit_deploy(ctx, caller, request)
    except ApiError as exc:
        return CommandRejected(errorcode=exc.code, errortext=exc.text)
    log.info("accepted deploy %s (job %s) from NATS", accepted.id, accepted.jobid)
    return accepted
