"""listTemplates' templatefilter as CloudStack scopes it for a user and an administrator,
and the two aliases: declared in the registry, each running the command it names."""

from __future__ import annotations

import pytest

import services.gateway.commands  # noqa: F401  (registers every command)
from services.gateway.api import COMMANDS
from services.gateway.commands.templates import (
    TEMPLATE_FILTERS,
    Scope,
    seed_template_from_vm_snapshot,
    template_scope,
)
from services.gateway.commands.volumes import create_volume_from_vm_snapshot
from shared.errors import PARAM_ERROR, ApiError
from tests.unit.test_api_description import ADMIN_CALLER, USER_CALLER

USER_OWN = Scope(True, USER_CALLER.account_id)
ADMIN_OWN = Scope(True, ADMIN_CALLER.account_id)


@pytest.mark.parametrize(("name", "for_user", "for_admin"), [
    ("self", USER_OWN, ADMIN_OWN),
    ("selfexecutable", USER_OWN, ADMIN_OWN),
    ("executable", USER_OWN, ADMIN_OWN),  # public (none) or the caller's own
    ("featured", Scope(False), Scope(False)),  # public and featured: none
    ("community", Scope(False), Scope(False)),  # public, not featured: none
    ("shared", Scope(False), Scope(False)),  # shared by others: none
    ("sharedexecutable", Scope(False), Scope(False)),
    ("SELF", USER_OWN, ADMIN_OWN),
])
def test_each_filter_scopes_a_user_and_an_admin(name: str, for_user: Scope,
                                                for_admin: Scope) -> None:
    assert template_scope(name, USER_CALLER, by_id=False) == for_user
    assert template_scope(name, ADMIN_CALLER, by_id=False) == for_admin


def test_all_is_every_accounts_for_an_admin_and_refused_to_a_user() -> None:
    assert template_scope("all", ADMIN_CALLER, by_id=False) == Scope(True)
    with pytest.raises(ApiError) as refused:
        template_scope("all", USER_CALLER, by_id=False)
    assert refused.value.code == PARAM_ERROR and "admin only" in refused.value.text


def test_with_an_id_the_filter_scopes_nothing_but_what_the_caller_sees() -> None:
    for name in set(TEMPLATE_FILTERS) - {"all"}:
        assert template_scope(name, USER_CALLER, by_id=True) == Scope(True)
        assert template_scope(name, ADMIN_CALLER, by_id=True) == Scope(True)


def test_an_unknown_filter_is_refused() -> None:
    with pytest.raises(ApiError) as refused:
        template_scope("mine", USER_CALLER, by_id=False)
    assert refused.value.code == PARAM_ERROR and "templatefilter" in refused.value.text


def test_templatefilter_is_required_as_upstream() -> None:
    param = COMMANDS["listtemplates"].param("templatefilter")
    assert param is not None and param.required


@pytest.mark.parametrize(("alias", "of", "required"), [
    ("seedTemplateFromVmSnapshot", "prepareTemplate", {"vmsnapshotid"}),
    ("createVolumeFromVmSnapshot", "createVolume", {"vmsnapshotid", "volumeid"}),
])
def test_an_alias_is_declared_as_one_and_takes_a_subset_of_its_commands_parameters(
        alias: str, of: str, required: set[str]) -> None:
    declared, original = COMMANDS[alias.lower()], COMMANDS[of.lower()]
    assert declared.description.startswith(f"An alias of {of} ")
    assert {p.name for p in declared.params if p.required} == required
    assert {p.name for p in declared.params} <= {p.name for p in original.params}
    assert (declared.is_async, declared.response, declared.role) == \
        (original.is_async, original.response, original.role)


def test_the_alias_runs_the_commands_own_code() -> None:
    """Each alias is registered on the function its command calls for that case."""
    assert COMMANDS["createvolumefromvmsnapshot"].handler is create_volume_from_vm_snapshot
    assert COMMANDS["seedtemplatefromvmsnapshot"].handler is seed_template_from_vm_snapshot
