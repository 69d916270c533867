"""Settings from the environment and a file, and secrets kept out of logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import config


def test_environment_overrides_file_and_defaults(tmp_path: Path) -> None:
    file = tmp_path / "snapdeploy.toml"
    file.write_text('nats_url = "nats://file:4222"\nvcenter_user = "from-file"\n')
    settings = config.load({
        "SNAPDEPLOY_CONFIG": str(file),
        "SNAPDEPLOY_NATS_URL": "nats://env:4222",
        "DATABASE_URL": "postgresql://u@db/x",
        "SNAPDEPLOY_VCENTER_VERIFY_TLS": "false",
    })
    assert settings.nats_url == "nats://env:4222"
    assert settings.vcenter_user == "from-file"
    assert settings.database_url == "postgresql://u@db/x"
    assert settings.vcenter_verify_tls is False
    assert settings.gateway_listen == "127.0.0.1:8080"


def test_as_env_round_trips() -> None:
    settings = config.Settings(nats_url="nats://x:1", vcenter_verify_tls=False)
    assert config.load(config.as_env(settings)) == settings


def test_invalid_setting_names_the_field() -> None:
    with pytest.raises(SystemExit, match="vcenter_verify_tls"):
        config.load({"SNAPDEPLOY_VCENTER_VERIFY_TLS": "maybe"})


def test_redact_url_hides_only_the_password() -> None:
    assert config.redact_url("postgresql://me:pw@h:5/db") == "postgresql://me:***@h:5/db"
    assert config.redact_url("nats://h:4222") == "nats://h:4222"


def test_kvm_zones_reads_each_zone_and_its_hosts_in_order() -> None:
    zones = config.kvm_zones(
        " KVM0 : kvm0=qemu:///system , kvm1=qemu+ssh://root@h1/system?keyfile=/k ;"
        "KVM1: kvm2=qemu+unix:///system?socket=/run/x/libvirt-sock;")
    assert zones == {
        "KVM0": {"kvm0": "qemu:///system", "kvm1": "qemu+ssh://root@h1/system?keyfile=/k"},
        "KVM1": {"kvm2": "qemu+unix:///system?socket=/run/x/libvirt-sock"},
    }
    assert list(zones["KVM0"]) == ["kvm0", "kvm1"]
    assert config.kvm_zones("") == {} and config.kvm_zones(" ; ") == {}


@pytest.mark.parametrize(("text", "named"), [
    ("kvm0=qemu:///system", "'kvm0=qemu:///system' does not start with a zone's name"),
    ("KVM0 kvm0=qemu:///system", "'KVM0 kvm0=qemu:///system' does not start with a zone's"),
    ("KVM0: kvm0", "'kvm0' in zone 'KVM0' is not <host>=<libvirt URI>"),
    ("KVM0:", "zone 'KVM0' has no host"),
    ("KVM0: , ", "zone 'KVM0' has no host"),
    ("my zone: h=qemu:///system", "zone name 'my zone'"),
    ("KVM0: my host=qemu:///system", "host name 'my host' in zone 'KVM0'"),
    ("KVM0: h=", "'' (host 'h' in zone 'KVM0') is not a libvirt URI"),
    ("KVM0: h=/var/run/libvirt", "'/var/run/libvirt' (host 'h' in zone 'KVM0') is not a libvirt"),
    ("KVM0: h=qemu:///system, h=qemu:///session", "host 'h' is named twice in zone 'KVM0'"),
    ("KVM0: h=qemu:///system; KVM0: g=qemu:///system", "zone 'KVM0' is named twice"),
    ("A: h=qemu:///system; B: h=qemu+ssh://b/system",
     "host 'h' is in zone 'A' and in zone 'B'"),
])
def test_kvm_zones_names_the_part_that_is_wrong(text: str, named: str) -> None:
    with pytest.raises(ValueError) as refused:
        config.kvm_zones(text)
    assert str(refused.value).startswith("kvm_zones: ")
    assert named in str(refused.value)


def test_a_malformed_kvm_zones_setting_stops_the_process_at_load() -> None:
    with pytest.raises(SystemExit, match="kvm_zones: 'kvm0' in zone 'KVM0'"):
        config.load({"SNAPDEPLOY_KVM_ZONES": "KVM0: kvm0"})
    assert config.load({"SNAPDEPLOY_KVM_ZONES": "KVM0: kvm0=qemu:///system"}).kvm_zones
