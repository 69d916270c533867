"""How the stack reaches its own servers: PostgreSQL through its Unix-domain socket, and a
port of its own for each server."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.stack import launcher
from shared.stack._servers import PG_SOCKETS, SOCKET_PATH_MAX, postgres_socket_url

URL = "postgresql://owner:s3cret@127.0.0.1:5544/snapdeploy"


def test_the_url_names_the_socket_folder_and_port_and_keeps_the_credentials(
        tmp_path: Path) -> None:
    (tmp_path / PG_SOCKETS).mkdir()
    (tmp_path / PG_SOCKETS / ".s.PGSQL.5544").touch()
    parts = urlsplit(postgres_socket_url(URL, tmp_path))
    assert (parts.scheme, parts.username, parts.password, parts.hostname, parts.path) == (
        "postgresql", "owner", "s3cret", None, "/snapdeploy")
    assert parse_qs(parts.query) == {"host": [str(tmp_path / PG_SOCKETS)], "port": ["5544"]}


def test_tcp_stays_when_there_is_no_socket_or_its_path_is_too_long(tmp_path: Path) -> None:
    assert postgres_socket_url(URL, tmp_path) == URL
    deep = tmp_path / ("d" * (SOCKET_PATH_MAX - len(str(tmp_path)) - len(PG_SOCKETS)))
    (deep / PG_SOCKETS).mkdir(parents=True)
    (deep / PG_SOCKETS / ".s.PGSQL.5544").touch()
    assert postgres_socket_url(URL, deep) == URL


def test_a_stack_never_hands_out_one_port_twice(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The system may offer a port again before the server it was picked for binds it: the
    stack picks another."""
    offered = iter([40001, 40002, 40001, 40002, 40003])
    monkeypatch.setattr(launcher, "free_port", lambda: next(offered))
    stack = launcher.Stack(tmp_path)
    assert [stack._free_port() for _ in range(3)] == [40001, 40002, 40003]
