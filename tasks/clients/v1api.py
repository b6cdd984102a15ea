"""GETs on the V1 API gateway (``LFX_API_GW``) with an Auth0 bearer.

The user service (``v1/users/{id}``) and the organization service
(``organization-service/v1/orgs/{sfid}``) answer the same way, so one client
class serves both: a 401 drops the access token and tries once more with a
new one; every other failure becomes a ``LookupFailure`` whose ``kind`` the
cache uses to decide whether the answer says something about the id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from tasks.clients.auth0 import Auth0Error, Auth0TokenSource, token_source_from_settings
from tasks.clients.cached_directory import LookupFailure

if TYPE_CHECKING:
    from sync_core.settings import WorkerSettings


class V1ApiFetcher:
    """``GET {LFX_API_GW}{path}{id}`` with an Auth0 bearer; thread-safe.

    Parameters:
        settings: the worker's settings (gateway, timeout, Auth0 client).
        path: the resource path under the gateway, ending in ``/``.
        service: how messages name the service (``V1 user service``).
        token_source: Auth0 tokens; share one between fetchers of one worker.
        session: the HTTP session (one is created when omitted).
        error_type: the ``LookupFailure`` subclass raised.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        path: str,
        service: str,
        *,
        token_source: Auth0TokenSource | None = None,
        session: requests.Session | None = None,
        error_type: type[LookupFailure] = LookupFailure,
    ) -> None:
        self._session = session or requests.Session()
        self._tokens = token_source or token_source_from_settings(settings, self._session)
        gateway = settings.lfx_api_gw
        # The audience stays as configured; only the URL needs the separator.
        self.base_url = gateway if gateway.endswith("/") else gateway + "/"
        self.path = path
        self.service = service
        self.timeout = settings.http_timeout
        self._error = error_type

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, path={self.path!r})"

    def fetch(self, entry_id: str) -> dict[str, Any]:
        """The JSON object the service answers for ``entry_id``; ``LookupFailure`` otherwise."""
        token = self._access_token()
        response = self._get(entry_id, token)
        if response.status_code == 401:
            # The gateway may have revoked or rotated the token before its expiry.
            self._tokens.invalidate(token)
            response = self._get(entry_id, self._access_token())
        if response.status_code == 404:
            raise self._error(f"the {self.service} does not know it", kind="not_found", status=404)
        if response.status_code in (401, 403):
            raise self._error(
                f"the {self.service} refused the token ({response.status_code})",
                kind="unauthorized",
                status=response.status_code,
            )
        if response.status_code != 200:
            raise self._error(
                f"the {self.service} answered {response.status_code}",
                kind="server_error",
                status=response.status_code,
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise self._error(
                f"the {self.service} answered with no JSON object", kind="invalid_response"
            )
        return body

    def close(self) -> None:
        """Close the HTTP connections."""
        self._session.close()

    def _access_token(self) -> str:
        try:
            return self._tokens.access_token()
        except Auth0Error as error:
            raise self._error(str(error), kind="auth0", status=error.status) from None

    def _get(self, entry_id: str, token: str) -> requests.Response:
        url = f"{self.base_url}{self.path}{quote(entry_id, safe='')}"
        try:
            return self._session.get(
                url, headers={"Authorization": f"Bearer {token}"}, timeout=self.timeout
            )
        except requests.Timeout:
            raise self._error(f"the {self.service} timed out", kind="timeout") from None
        except requests.RequestException as error:
            raise self._error(
                f"the {self.service} is unreachable: {type(error).__name__}", kind="unavailable"
            ) from None
