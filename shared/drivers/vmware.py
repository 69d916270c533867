"""VMware vSphere through pyvmomi.

pyvmomi blocks, so every call runs on a thread of this connection's own executor and the
event loop never waits on vCenter.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

T = TypeVar("T")


class VSphere:
    """One authenticated vCenter session."""

    def __init__(self, service_instance: Any, executor: ThreadPoolExecutor) -> None:
        self.si = service_instance
        self.content = service_instance.RetrieveContent()
        self._executor = executor

    @classmethod
    async def connect(cls, url: str, user: str, password: str, *, verify_tls: bool = True,
                      threads: int = 8) -> VSphere:
        """Log in to the vCenter at ``url`` (``https://host[:port]/sdk``)."""
        parts = urlsplit(url)
        executor = ThreadPoolExecutor(threads, thread_name_prefix="vsphere")
        context = None if verify_tls else ssl._create_unverified_context()

        def login() -> Any:
            return SmartConnect(  # type: ignore[no-untyped-call]
                host=parts.hostname, port=parts.port or 443, user=user, pwd=password,
                protocol=parts.scheme or "https", path=parts.path or "/sdk",
                sslContext=context, connectionPoolTimeout=30,
            )

        loop = asyncio.get_running_loop()
        try:
            si = await loop.run_in_executor(executor, login)
            return await loop.run_in_executor(executor, lambda: cls(si, executor))
        except BaseException:
            executor.shutdown(wait=False)
            raise

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def about(self) -> str:
        """The product vCenter says it is, e.g. ``VMware vCenter Server 8.0.3``."""
        return str(self.content.about.fullName)

    async def datacenters(self) -> list[str]:
        def names() -> list[str]:
            view = self.content.viewManager.CreateContainerView(
                self.content.rootFolder, [vim.Datacenter], True)
            try:
                return [dc.name for dc in view.view]
            finally:
                view.Destroy()

        return await self.call(names)

    async def close(self) -> None:
        await self.call(Disconnect, self.si)
        self._executor.shutdown(wait=False)
