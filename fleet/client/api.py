"""The fleet REST API as the CLI needs it. Every failure leaves as a ClientError whose
message says what went wrong and, when we know, how to fix it."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import httpx

from fleet.client.credentials import Credentials
from fleet.client.errors import EXIT_AUTH, EXIT_BUSY, EXIT_UNREACHABLE, ClientError

PREFIX = "/api/v1"


class Api:
    def __init__(
        self, creds: Credentials, *, timeout: float | None = None, transport: httpx.BaseTransport | None = None
    ):
        self.creds = creds
        if timeout is None:
            timeout = _env_timeout()
        self._http = httpx.Client(
            base_url=creds.url,
            headers={"Authorization": f"Bearer {creds.token}", "User-Agent": "fleet-cli"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport and error translation ---------------------------------------------
    def _call(self, method: str, path: str, **kw: Any) -> Any:
        url = PREFIX + path
        try:
            r = self._http.request(method, url, **kw)
        except httpx.ConnectError as e:
            raise ClientError(
                f"cannot reach the fleet server at {self.creds.url} ({_reason(e)})",
                fix="check the URL (`fleet login URL` or FLEET_URL) and that the service is running",
                exit_code=EXIT_UNREACHABLE,
            ) from None
        except httpx.TimeoutException:
            raise ClientError(
                f"the fleet server at {self.creds.url} did not answer {method} {url} in time",
                fix="retry; if it persists the service or the network is overloaded",
                exit_code=EXIT_UNREACHABLE,
            ) from None
        except httpx.HTTPError as e:
            raise ClientError(
                f"talking to {self.creds.url} failed: {e}", exit_code=EXIT_UNREACHABLE
            ) from None
        if r.status_code < 400:
            try:
                return r.json()
            except ValueError:
                raise ClientError(
                    f"{self.creds.url} answered {method} {url} with something that is not JSON; "
                    "is this URL a fleet server?"
                ) from None
        raise _translate(r, self.creds.url)

    # -- endpoints -------------------------------------------------------------------
    def healthz(self) -> Any:
        try:
            r = self._http.get("/healthz")
        except httpx.HTTPError as e:
            raise ClientError(
                f"cannot reach the fleet server at {self.creds.url} ({_reason(e)})",
                fix="check the URL and that the service is running",
                exit_code=EXIT_UNREACHABLE,
            ) from None
        return r.status_code

    def devices(self, **filters: Any) -> list[dict[str, Any]]:
        return self._pages("/devices", filters)

    def device(self, ref: str | int) -> dict[str, Any]:
        return self._call("GET", f"/devices/{_seg(ref)}")  # type: ignore[no-any-return]

    def dongle(self, dongle_id: str) -> dict[str, Any]:
        return self._call("GET", f"/dongles/{_seg(dongle_id)}")  # type: ignore[no-any-return]

    def leases(self, **filters: Any) -> list[dict[str, Any]]:
        return self._pages("/leases", filters)

    def lease(self, lease_id: int) -> dict[str, Any]:
        return self._call("GET", f"/leases/{int(lease_id)}")  # type: ignore[no-any-return]

    def acquire(self, target: str, duration_s: int | None, clients: list[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"device": target, "clients": clients}
        if duration_s is not None:
            body["duration_s"] = duration_s
        return self._call("POST", "/leases", json=body)  # type: ignore[no-any-return]

    def extend(self, lease_id: int, duration_s: int) -> dict[str, Any]:
        body = {"duration_s": duration_s}
        return self._call("POST", f"/leases/{int(lease_id)}/extend", json=body)  # type: ignore[no-any-return]

    def release(self, lease_id: int) -> dict[str, Any]:
        return self._call("POST", f"/leases/{int(lease_id)}/release")  # type: ignore[no-any-return]

    def whoami(self) -> str | None:
        """The caller's user name when the service can say it (``/me``), else None."""
        try:
            me = self._call("GET", "/me")
        except ClientError as e:
            if e.extra.get("status") in (404, 405):
                return None
            raise
        name = me.get("name") if isinstance(me, dict) else None
        return name if isinstance(name, str) else None

    def _pages(self, path: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None}
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self._call("GET", path, params={**params, "limit": 1000, "offset": offset})
            items = page.get("items", []) if isinstance(page, dict) else []
            out.extend(items)
            offset += len(items)
            if not items or offset >= int(page.get("total", 0)):
                return out


def _env_timeout() -> float:
    raw = os.environ.get("FLEET_TIMEOUT", "20")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise ClientError(f"FLEET_TIMEOUT must be seconds between 0 and 3600, got {raw!r}")
    return value


def _seg(ref: str | int) -> str:
    return quote(str(ref), safe="")


def _reason(e: Exception) -> str:
    text = str(e)
    return text.split("] ", 1)[-1] if text else type(e).__name__


def _translate(r: httpx.Response, url: str) -> ClientError:
    try:
        err = r.json().get("error", {})
    except (ValueError, AttributeError):
        err = {}
    if not isinstance(err, dict):
        err = {}
    message = err.get("message") or f"HTTP {r.status_code} from {url}"
    extra = {k: v for k, v in err.items() if k not in ("message",)}
    extra["status"] = r.status_code
    if r.status_code == 401:
        return ClientError(
            f"the server rejected the token ({message})",
            fix="ask an admin for a token (`fleet users add NAME` or `fleet users token NAME`) "
            "and run `fleet login URL`",
            exit_code=EXIT_AUTH,
            **extra,
        )
    if r.status_code == 403:
        return ClientError(f"not allowed: {message}", exit_code=EXIT_AUTH, **extra)
    # 409: the device cannot be had now (leased: the message names the holder and until
    # when; offline; quarantined); --wait keeps asking
    if r.status_code == 409:
        return ClientError(message, exit_code=EXIT_BUSY, **extra)
    if r.status_code == 404:
        return ClientError(message, fix="`fleet ls` shows the devices and their names", **extra)
    return ClientError(message, **extra)
