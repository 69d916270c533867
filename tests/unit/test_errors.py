"""CloudStack's error codes and the one error type: envelope bodies and the domain's
refusals, which are that type."""

from __future__ import annotations

from shared import errors
from shared.domain.deploy import Rejected
from shared.domain.limits import LimitExceeded, Usage, check


def test_the_envelope_body_pairs_each_code_with_cloudstacks_cserrorcode() -> None:
    pairs = {errors.PARAM_ERROR: 4350, errors.PERMISSION_DENIED: 4365,
             errors.RESOURCE_ALLOCATION: 4370, errors.RESOURCE_IN_USE: 4375,
             errors.RESOURCE_UNAVAILABLE: 4380, errors.INTERNAL_ERROR: 4250,
             errors.API_LIMIT_EXCEEDED: 4545}
    for code, cs_code in pairs.items():
        assert errors.ApiError(code, "why").body() == {
            "uuidList": [], "errorcode": code, "cserrorcode": cs_code, "errortext": "why"}


def test_a_code_cloudstack_does_not_pair_is_a_bare_server_error() -> None:
    for code in (errors.AUTH_ERROR, errors.UNSUPPORTED, errors.INSUFFICIENT_CAPACITY):
        assert errors.ApiError(code, "x").body()["cserrorcode"] == 9999


def test_invalid_names_the_parameter() -> None:
    error = errors.invalid("hostid", "no host h1 exists")
    assert (error.code, error.text) == (431, "invalid parameter hostid: no host h1 exists")


def test_the_domains_refusals_are_api_errors() -> None:
    assert issubclass(Rejected, errors.ApiError)
    try:
        check("bob", Usage(user_vm=20), Usage(user_vm=1), {})
    except errors.ApiError as refused:
        assert isinstance(refused, LimitExceeded)
        assert refused.body()["errorcode"] == 535 and refused.body()["cserrorcode"] == 4370
    else:
        raise AssertionError("a 21st VM passed the default limit of 20")
