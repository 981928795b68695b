"""Serving the files of a vault that lives behind an fsspec URL (s3://…) under ``/vault``.

A local vault is served by Panel's static files handler; a vault behind a URL
is read through :class:`~ecotaxa_core.vault.Vault` by this Tornado handler,
with the headers a static file gets (type, length, a day of browser cache:
vault files never change under their name).
"""

from __future__ import annotations

import mimetypes

from tornado.web import HTTPError, RequestHandler

from ecotaxa_core.vault import Vault

__all__ = ["VaultFileHandler", "vault_routes"]


class VaultFileHandler(RequestHandler):
    def initialize(self, vault: Vault) -> None:
        self.vault = vault

    async def get(self, rel: str) -> None:
        parts = rel.split("/")
        if not rel or any(p in ("", ".", "..") for p in parts) or "\\" in rel:
            raise HTTPError(404)
        try:
            data = await _in_thread(self.vault.read_bytes, rel)
        except (FileNotFoundError, IsADirectoryError):
            raise HTTPError(404) from None
        self.set_header("Content-Type", mimetypes.guess_type(rel)[0] or "application/octet-stream")
        self.set_header("Cache-Control", "max-age=86400")
        self.finish(data)


async def _in_thread(func, *args):
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(None, func, *args)


def vault_routes(route: str, vault: Vault) -> list[tuple]:
    """Tornado routes serving ``vault`` under ``/<route>/``."""
    return [(rf"/{route}/(.*)", VaultFileHandler, {"vault": vault})]
