"""What the edge agent tells a technician when the fleet service cannot be used: the URL and the cause."""

from __future__ import annotations

import httpx

from fleet.i18n import _


def _url_of(err: httpx.HTTPError, fallback: str) -> str:
    try:
        return str(err.request.url)
    except RuntimeError:  # an error raised before any request was built
        return fallback


def describe(err: Exception, api: str) -> str:
    """One sentence naming the URL and the cause; never httpx's raw text (it names neither the fix nor the
    token's problem)."""
    if isinstance(err, httpx.HTTPStatusError):
        url = _url_of(err, api)
        status = err.response.status_code
        if status == httpx.codes.UNAUTHORIZED:
            return _(
                "the fleet service at {url} refused the token (401): "
                "check LABFLEET_AGENT_TOKEN or the token file",
                url=url,
            )
        if status == httpx.codes.FORBIDDEN:
            return _(
                "the token may not do this at {url} (403): the agent needs a technician of the school",
                url=url,
            )
        if status == httpx.codes.NOT_FOUND:
            return _("{url} answered 404: is --api the fleet service's base URL?", url=url)
        return _("the fleet service at {url} answered {status}", url=url, status=status)
    if isinstance(err, httpx.TimeoutException):
        return _("the fleet service at {url} did not answer in time", url=_url_of(err, api))
    if isinstance(err, httpx.ConnectError):
        return _(
            "cannot reach the fleet service at {url}: connection refused or no route "
            "(is it running, is --api right?)",
            url=_url_of(err, api),
        )
    if isinstance(err, httpx.HTTPError):
        return _(
            "talking to the fleet service at {url} failed: {cause}",
            url=_url_of(err, api),
            cause=type(err).__name__,
        )
    return str(err)
