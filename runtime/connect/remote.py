"""A client of a Kafka Connect cluster's REST API (``ksql.connect.url``), as ksqlDB's
``DefaultConnectClient``: the connector statements send the connectors whose class streamsql
does not build in to that cluster (``streamsql.exec.connectors``).

Connect's refusals come back as ``RemoteConnectError`` with Connect's HTTP status and its error
body exactly as Connect sent it (ksqlDB quotes it: ``Failed to create connector:
{"error_code":409,"message":"Connector x already exists"}``); a cluster that cannot be reached
(refused, timed out, not HTTP) is ``ConnectUnreachableError``.
"""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from streamsql.runtime.connect.worker import ConnectRestError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0


class RemoteConnectError(ConnectRestError):
    """A request the Connect cluster refused: its status and its error body, verbatim."""

    def __init__(self, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else None
        super().__init__(status, str(message if message is not None else body))
        self._body = body

    def body(self) -> Any:
        return self._body


class ConnectUnreachableError(ConnectRestError):
    """The Connect cluster did not answer (down, wrong URL, timed out). Status 503: the
    statement may succeed later, nothing about it is wrong."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(503, f"Could not reach the Kafka Connect cluster at {url} "
                              f"(ksql.connect.url): {reason}")
        self.url = url

    def body(self) -> Any:
        # Not Connect's answer (there was none): the reason alone, not a made-up JSON body.
        return self.message


class ConnectClient:
    """Kafka Connect's REST API at ``url``. One HTTP connection pool per client; ``close()``
    it. Credentials may be given in the URL (``http://user:secret@host:8083``)."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout,
                                       headers={"Accept": "application/json"})

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, body: Any = None,
                       params: list[tuple[str, str]] | None = None) -> Any:
        content = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            resp = await self._http.request(method, path, content=content, headers=headers, params=params)
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            log.warning("Kafka Connect at %s did not answer %s %s: %s", self.url, method, path, reason)
            raise ConnectUnreachableError(self.url, reason) from None
        if resp.status_code >= 400:
            try:
                err: Any = orjson.loads(resp.content)
            except orjson.JSONDecodeError:
                err = resp.text
            raise RemoteConnectError(resp.status_code, err)
        if not resp.content:
            return None
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise ConnectUnreachableError(self.url, f"not Kafka Connect's REST API: {method} {path} "
                                                    f"answered {resp.text[:200]!r}") from None

    @staticmethod
    def _path(name: str) -> str:
        return "/connectors/" + quote(name, safe="")

    async def create(self, name: str, config: dict[str, str]) -> dict[str, Any]:
        """``POST /connectors``: the created connector's info (name, config, tasks, type)."""
        return await self._request("POST", "/connectors", {"name": name, "config": config})

    async def connectors(self) -> dict[str, dict[str, Any]]:
        """``GET /connectors?expand=status&expand=info``: every connector's status and info."""
        out = await self._request("GET", "/connectors", params=[("expand", "status"), ("expand", "info")])
        return out if isinstance(out, dict) else {}

    async def info(self, name: str) -> dict[str, Any]:
        return await self._request("GET", self._path(name))

    async def status(self, name: str) -> dict[str, Any]:
        return await self._request("GET", self._path(name) + "/status")

    async def topics(self, name: str) -> list[str]:
        """``GET /connectors/{name}/topics``: the topics it has used (an empty list where the
        worker does not track them: ``topic.tracking.enable=false``)."""
        try:
            out = await self._request("GET", self._path(name) + "/topics")
        except RemoteConnectError as exc:
            if exc.status == 403:  # topic tracking disabled on the worker
                return []
            raise
        return sorted((out or {}).get(name, {}).get("topics", []))

    async def delete(self, name: str) -> None:
        await self._request("DELETE", self._path(name))

    async def plugins(self) -> list[dict[str, Any]]:
        """``GET /connector-plugins``: the connector classes the cluster has."""
        out = await self._request("GET", "/connector-plugins")
        return out if isinstance(out, list) else []


__all__ = ["ConnectClient", "ConnectUnreachableError", "RemoteConnectError"]
