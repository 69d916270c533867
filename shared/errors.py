"""CloudStack's error codes, and the one error that carries a code and a text.

Whatever refuses a request (the gateway's parameter checks, a domain rule, a service that
settles a job as failed) speaks in these codes. ``ApiError`` reaches a client as
CloudStack's error envelope (``body``): on the HTTP API with the code as the status, on
the NATS door as ``proto.commands.CommandRejected``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "API_LIMIT_EXCEEDED",
    "AUTH_ERROR",
    "CS_ERROR_CODES",
    "INSUFFICIENT_CAPACITY",
    "INTERNAL_ERROR",
    "PARAM_ERROR",
    "PERMISSION_DENIED",
    "RESOURCE_ALLOCATION",
    "RESOURCE_IN_USE",
    "RESOURCE_UNAVAILABLE",
    "UNSUPPORTED",
    "ApiError",
    "invalid",
]

# CloudStack's ApiErrorCode values: the ``errorcode`` of an envelope and its HTTP status.
AUTH_ERROR = 401
API_LIMIT_EXCEEDED = 429
PARAM_ERROR = 431
UNSUPPORTED = 432
INTERNAL_ERROR = 530
PERMISSION_DENIED = 531
INSUFFICIENT_CAPACITY = 533
RESOURCE_UNAVAILABLE = 534
RESOURCE_ALLOCATION = 535
RESOURCE_IN_USE = 536

# errorcode -> cserrorcode (the Java exception's code), as CloudStack pairs them; a code
# without a pair is answered with 9999, CloudStack's bare server error.
CS_ERROR_CODES: dict[int, int] = {
    API_LIMIT_EXCEEDED: 4545,  # RequestLimitException
    PARAM_ERROR: 4350,  # InvalidParameterValueException
    PERMISSION_DENIED: 4365,  # PermissionDeniedException
    RESOURCE_ALLOCATION: 4370,  # ResourceAllocationException
    RESOURCE_IN_USE: 4375,  # ResourceInUseException
    RESOURCE_UNAVAILABLE: 4380,  # ResourceUnavailableException
    INTERNAL_ERROR: 4250,  # CloudRuntimeException
}
_BARE_SERVER_ERROR = 9999


class ApiError(Exception):
    """A refusal in CloudStack's terms: ``code`` (also the HTTP status) and a ``text``
    that says what went wrong, for which object, and what to do."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text

    @property
    def cs_code(self) -> int:
        """CloudStack's ``cserrorcode`` for ``code``."""
        return CS_ERROR_CODES.get(self.code, _BARE_SERVER_ERROR)

    def body(self) -> dict[str, Any]:
        """The body of CloudStack's error envelope (under ``<command>response``)."""
        return {"uuidList": [], "errorcode": self.code, "cserrorcode": self.cs_code,
                "errortext": self.text}


def invalid(param: str, reason: str) -> ApiError:
    """A 431 naming the parameter and why its value is refused."""
    return ApiError(PARAM_ERROR, f"invalid parameter {param}: {reason}")
