"""The configuration of a NATS cluster `snapdeploy up --nats-nodes N` writes, the servers a
``nats_url`` names, reloading every node, and the events stream's replicas."""

from __future__ import annotations

import json
import logging
import re
import stat
import subprocess
from pathlib import Path

import nats
import pytest

from proto import subjects
from shared import natsauth
from shared.bus import ensure_events_stream, nats_servers
from shared.stack._servers import (
    NatsCluster,
    Server,
    nats_config,
    nats_files,
    nats_node_name,
    tool_path,
)

CLUSTER = NatsCluster((4101, 4102, 4103), (6101, 6102, 6103), "route-secret")


def conf(state: Path, node: int) -> str:
    return nats_config(state, CLUSTER.client_ports[node - 1], 'include "auth.conf"', node=node,
                       cluster=CLUSTER).read_text()


def test_each_node_has_its_own_ports_folder_and_name_and_routes_to_the_others(
        tmp_path: Path) -> None:
    texts = {node: conf(tmp_path, node) for node in (1, 2, 3)}
    stores = set()
    for node, text in texts.items():
        assert f'listen: "127.0.0.1:{4100 + node}"' in text
        assert f'server_name: "snapdeploy-{node}"' in text
        assert 'name: "snapdeploy"' in text
        assert f'listen: "127.0.0.1:{6100 + node}"' in text
        routes = json.loads(re.search(r"routes: (\[.*\])", text).group(1))  # type: ignore[union-attr]
        assert sorted(routes) == sorted(f"nats-route://route:route-secret@127.0.0.1:{6100 + n}"
                                        for n in (1, 2, 3) if n != node)
        # The nodes check each other's password as a bcrypt hash.
        assert re.search(r'authorization \{ user: "route", password: "\$2[aby]\$', text)
        assert 'include "auth.conf"' in text
        store = re.search(r'store_dir: "([^"]+)"', text).group(1)  # type: ignore[union-attr]
        stores.add(store)
        path, pid_file, folder = nats_files(tmp_path, node)
        assert store == str(folder.resolve())
        assert f'pid_file: "{pid_file.resolve()}"' in text
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.parent == tmp_path / "nats"  # beside auth.conf, which each includes
    assert len(stores) == 3


def test_the_first_node_keeps_the_single_servers_files(tmp_path: Path) -> None:
    single = nats_config(tmp_path, 4222, "authorization {}").read_text()
    assert nats_files(tmp_path, 1) == (tmp_path / "nats" / "nats.conf",
                                       tmp_path / "nats" / "nats.pid", tmp_path / "nats")
    assert "cluster" not in single and "server_name" not in single
    assert [nats_node_name(n) for n in (1, 2, 3)] == ["nats-server", "nats-server-2",
                                                     "nats-server-3"]
    assert CLUSTER.urls == "nats://127.0.0.1:4101,nats://127.0.0.1:4102,nats://127.0.0.1:4103"


def test_nats_server_accepts_every_nodes_configuration(tmp_path: Path) -> None:
    natsauth.write_identities(tmp_path / "nats" / "auth.conf", "secret")
    for node in (1, 2, 3):
        path, _, _ = nats_files(tmp_path, node)
        conf(tmp_path, node)
        checked = subprocess.run([tool_path("nats-server"), "-c", str(path), "-t"],
                                 capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_nats_url_names_one_server_or_every_node() -> None:
    assert nats_servers("nats://a:4222") == ["nats://a:4222"]
    assert nats_servers(" nats://a:1, nats://b:2 ,nats://c:3,") == [
        "nats://a:1", "nats://b:2", "nats://c:3"]
    with pytest.raises(ValueError):
        nats_servers(" , ")


def test_a_reload_reaches_every_node_and_nothing_else(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "nats.pid").write_text(str(sleeper.pid))
        (tmp_path / "nats-2.pid").write_text("not a pid")
        (tmp_path / "other.pid").write_text(str(sleeper.pid))
        # A pid that is not nats-server is never signalled.
        assert natsauth.reload_all(tmp_path) == 0
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_events_stream_on_one_server_keeps_one_replica_and_says_why(
        nats_server: Server, caplog: pytest.LogCaptureFixture) -> None:
    nc = await nats.connect(nats_server.url, user=nats_server.user,
                            password=nats_server.password)
    try:
        js = nc.jetstream()
        with caplog.at_level(logging.ERROR, logger="shared.bus"):
            await ensure_events_stream(js, replicas=3)  # a single server cannot hold 3
        info = await js.stream_info(subjects.EVENTS_STREAM)
        assert info.config.num_replicas == 1
        assert "creating it with 1" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="shared.bus"):
            await ensure_events_stream(js, replicas=3)  # it exists: scaling up is refused
        assert (await js.stream_info(subjects.EVENTS_STREAM)).config.num_replicas == 1
        assert "refused to scale" in caplog.text
        await ensure_events_stream(js)  # the setting's default, 1: nothing to say
    finally:
        await nc.close()
