"""A small HTTP client for a Conveyor server (what the CLI uses)."""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator
from typing import Any

import httpx

from conveyor.errors import ConveyorError

__all__ = ["ApiError", "Client"]

FINAL = {"SUCCESS", "FAILURE", "CANCELLED"}


class ApiError(ConveyorError):
    """An error answer from the server, with its HTTP status and error code."""

    def __init__(self, status_code: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.status_code = status_code
        self.code = code


class Client:
    """``Client("http://127.0.0.1:8000", api_key=...)``; every method raises ApiError on an error answer."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, api_key: str | None = None, timeout: float = 30) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise ApiError(503, "unreachable", f"cannot reach {self.url}: {e}") from e
        return _answer(response)

    def submit(self, task_type: str, params: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
        body = {"task_type": task_type, "params": params or {}, **{k: v for k, v in options.items() if v is not None}}
        result: dict[str, Any] = self._call("POST", "/api/v1/tasks", json=body)
        return result

    def get(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/api/v1/tasks/{task_id}")
        return result

    def status(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/api/v1/tasks/{task_id}/status/")
        return result

    def result(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/api/v1/tasks/{task_id}/result/")
        return result

    def cancel(self, task_id: str, *, terminate: bool = False) -> dict[str, Any]:
        """Cancel a task; with ``terminate`` a running one is killed instead of asked to stop."""
        params = {"terminate": "true"} if terminate else None
        result: dict[str, Any] = self._call("POST", f"/api/v1/tasks/{task_id}/cancel/", params=params)
        return result

    def retry(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/api/v1/tasks/{task_id}/retry/")
        return result

    def list(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        result: dict[str, Any] = self._call("GET", "/api/v1/tasks", params=params)
        return result

    def task_types(self) -> builtins.list[dict[str, Any]]:
        data: builtins.list[dict[str, Any]] = self._call("GET", "/api/v1/task-types")["data"]
        return data

    def health(self) -> dict[str, Any]:
        response = self._http.get("/health")
        data: dict[str, Any] = response.json()
        return data

    def events(self, task_id: str) -> Iterator[dict[str, Any]]:
        """Each change of the task as it happens, ending with its final state (SSE)."""
        try:
            with self._http.stream("GET", f"/api/v1/tasks/{task_id}/events", timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    _answer(response)
                event, data = "message", ""
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data += line[5:].strip()
                    elif not line and data:
                        if event == "end":
                            return
                        yield json.loads(data)
                        event, data = "message", ""
        except httpx.TransportError as e:
            raise ApiError(503, "unreachable", f"cannot reach {self.url}: {e}") from e

    def wait(self, task_id: str) -> dict[str, Any]:
        """Follow the task to its end; returns its full record."""
        for update in self.events(task_id):
            if update.get("status") in FINAL:
                break
        return self.get(task_id)


def _answer(response: httpx.Response) -> Any:
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400:
        err = (data or {}).get("error", {}) if isinstance(data, dict) else {}
        raise ApiError(
            response.status_code,
            err.get("code", "http_error"),
            err.get("message", f"HTTP {response.status_code}"),
            err.get("details"),
        )
    return data
