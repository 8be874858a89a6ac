"""Meta Graph API client for sending WhatsApp messages: one `_request` chokepoint.

Reference: Meta's Cloud API pages linked from each public method; the error policy is in `outbound.retry`.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from requests.compat import json as complexjson  # type: ignore[attr-defined]  # simplejson when installed
from requests.sessions import merge_setting
from requests.structures import CaseInsensitiveDict
from requests.utils import get_auth_from_url

from outbound.exceptions import GraphConnectError, GraphError, GraphResponseLost

logger = logging.getLogger(__name__)

USER_AGENT = "whatsapp-ai-replies/0.1"


@dataclass(frozen=True)
class Recipient:
    """Who a message goes to: the phone number when known, else Meta's business-scoped user id; and from which
    of the business numbers (the conversation's: the number the customer wrote to)."""

    wa_id: str | None
    user_id: str | None = None
    # The sending business number's id (`Contact.phone_number_id`); None: the client's default number.
    phone_number_id: str | None = None

    def as_fields(self) -> dict[str, str]:
        if self.wa_id:
            return {"to": "+" + self.wa_id.lstrip("+")}
        if self.user_id:
            return {"recipient": self.user_id}
        raise ValueError("recipient has neither a phone number nor a user id")


@dataclass(frozen=True)
class SendResult:
    """Meta's answer to an accepted send."""

    wa_message_id: str
    message_status: str
    response: dict[str, Any]


class Sender(Protocol):
    """What the worker needs from a WhatsApp sender (the Graph client, or the console sender)."""

    def send_text(
        self, *, to: Recipient, body: str, reply_to: str | None, callback_data: str
    ) -> SendResult: ...

    def send_template(
        self, *, to: Recipient, name: str, language: str, body_parameters: list[str], callback_data: str
    ) -> SendResult: ...

    def send_buttons(
        self,
        *,
        to: Recipient,
        body: str,
        buttons: list[tuple[str, str]],
        reply_to: str | None,
        callback_data: str,
    ) -> SendResult: ...

    def mark_read(
        self, *, message_id: str, typing: bool, timeout: float, phone_number_id: str | None = None
    ) -> bool: ...


def text_message(*, to: Recipient, body: str, reply_to: str | None, callback_data: str) -> dict[str, Any]:
    """The JSON body of a text message, quoted as a reply to `reply_to` when given."""
    message: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        **to.as_fields(),
        "type": "text",
        "text": {"preview_url": False, "body": body},
        "biz_opaque_callback_data": callback_data,
    }
    if reply_to:
        message["context"] = {"message_id": reply_to}
    return message


def buttons_message(
    *, to: Recipient, body: str, buttons: list[tuple[str, str]], reply_to: str | None, callback_data: str
) -> dict[str, Any]:
    """The JSON body of an interactive message with reply buttons, given as (id, title) pairs (at most 3)."""
    message: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        **to.as_fields(),
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": body},
            "action": {
                "buttons": [{"type": "reply", "reply": {"id": id_, "title": title}} for id_, title in buttons]
            },
        },
        "biz_opaque_callback_data": callback_data,
    }
    if reply_to:
        message["context"] = {"message_id": reply_to}
    return message


def template_message(
    *, to: Recipient, name: str, language: str, body_parameters: list[str], callback_data: str
) -> dict[str, Any]:
    """The JSON body of a template message with positional body parameters."""
    template: dict[str, Any] = {"name": name, "language": {"code": language}}
    if body_parameters:
        template["components"] = [
            {"type": "body", "parameters": [{"type": "text", "text": value} for value in body_parameters]}
        ]
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        **to.as_fields(),
        "type": "template",
        "template": template,
        "biz_opaque_callback_data": callback_data,
    }


class WhatsAppClient:
    """Sends messages from the business numbers through the Graph API, all with the one system-user token.

    Each message leaves from its recipient's `phone_number_id` (`POST /{phone-number-id}/messages`), else from
    `phone_number_id` given here.
    """

    def __init__(
        self,
        *,
        access_token: str,
        phone_number_id: str,
        base_url: str = "https://graph.facebook.com",
        api_version: str = "v25.0",
        timeout: float = 15.0,
        session: requests.Session | None = None,
    ) -> None:
        self._access_token = access_token
        self._base = f"{base_url.rstrip('/')}/{api_version}"
        self._phone_number_id = phone_number_id
        self._timeout = timeout
        self._session = session or requests.Session()
        # Worked out once, here, instead of by `Session.request` on every call (see `_request`): the headers
        # (the session's, ours and the token), and what the environment says about our one host: HTTPS_PROXY,
        # HTTP_PROXY, NO_PROXY and the CA bundle of REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE (when the session
        # trusts the environment, as a new one does). A change to those variables takes a restart.
        self._headers = merge_setting(
            {"Authorization": f"Bearer {access_token}", "User-Agent": USER_AGENT},
            self._session.headers,
            dict_class=CaseInsensitiveDict,
        )
        self._send_options = _send_options(self._session, self._base)
        self._prepared_headers = _prepared_headers(self._headers)

    def send_text(self, *, to: Recipient, body: str, reply_to: str | None, callback_data: str) -> SendResult:
        """Send a free-form text (inside the 24-hour window only).

        https://developers.facebook.com/documentation/business-messaging/whatsapp/messages/text-messages
        """
        return self._send(to, text_message(to=to, body=body, reply_to=reply_to, callback_data=callback_data))

    def send_template(
        self, *, to: Recipient, name: str, language: str, body_parameters: list[str], callback_data: str
    ) -> SendResult:
        """Send an approved template (allowed outside the window).

        https://developers.facebook.com/documentation/business-messaging/whatsapp/messages/template-messages
        """
        return self._send(
            to,
            template_message(
                to=to,
                name=name,
                language=language,
                body_parameters=body_parameters,
                callback_data=callback_data,
            ),
        )

    def send_buttons(
        self,
        *,
        to: Recipient,
        body: str,
        buttons: list[tuple[str, str]],
        reply_to: str | None,
        callback_data: str,
    ) -> SendResult:
        """Send a text with reply buttons (inside the 24-hour window only; body ≤ 1024, titles ≤ 20 characters).

        https://developers.facebook.com/documentation/business-messaging/whatsapp/messages/interactive-reply-buttons-messages
        """
        return self._send(
            to,
            buttons_message(
                to=to, body=body, buttons=buttons, reply_to=reply_to, callback_data=callback_data
            ),
        )

    def mark_read(
        self, *, message_id: str, typing: bool, timeout: float, phone_number_id: str | None = None
    ) -> bool:
        """Mark the customer's message (and the earlier ones) read and, with `typing`, show "typing…" until we
        reply or for 25 s; from `phone_number_id`, the number the customer wrote to (default: the client's).
        True when Meta answered `{"success": true}`; errors raise like any request (the
        caller treats them as best effort) but are logged at INFO, not as failures.

        https://developers.facebook.com/documentation/business-messaging/whatsapp/typing-indicators
        """
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": message_id,
        }
        if typing:
            payload["typing_indicator"] = {"type": "text"}
        body = self._request(
            "POST", self.messages_url(phone_number_id), payload, timeout=timeout, error_level=logging.INFO
        )
        return body.get("success") is True

    def message_templates(self, *, account_id: str, name: str) -> list[dict[str, Any]]:
        """The business account's templates called `name` (one per language), with status and category.

        https://developers.facebook.com/docs/graph-api/reference/whats-app-business-account/message_templates/
        """
        url = f"{self._base}/{account_id}/message_templates"
        body = self._request(
            "GET",
            url,
            None,
            params={
                "name": name,
                "fields": "name,language,status,category,id,rejected_reason",
                "limit": "100",
            },
        )
        data = body.get("data")
        # `name` filters by prefix on Meta's side: keep the exact name only.
        return (
            [t for t in data if isinstance(t, dict) and t.get("name") == name]
            if isinstance(data, list)
            else []
        )

    def messages_url(self, phone_number_id: str | None = None) -> str:
        """`/{phone-number-id}/messages` of the given business number (default: the client's)."""
        return f"{self._base}/{phone_number_id or self._phone_number_id}/messages"

    def _send(self, to: Recipient, message: dict[str, Any]) -> SendResult:
        body = self._request("POST", self.messages_url(to.phone_number_id), message)
        messages = body.get("messages")
        first = (
            messages[0] if isinstance(messages, list) and messages and isinstance(messages[0], dict) else {}
        )
        wa_message_id = first.get("id")
        if not isinstance(wa_message_id, str) or not wa_message_id:
            # A 200 without a message id: Meta accepted something we cannot track. Treat as lost, not as sent.
            raise GraphResponseLost(f"2xx response without messages[0].id: {json.dumps(body)[:200]}")
        return SendResult(
            wa_message_id=wa_message_id,
            message_status=str(first.get("message_status") or ""),
            response=body,
        )

    def _request(
        self,
        method: str,
        url: str,
        payload: dict[str, Any] | None,
        *,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
        error_level: int = logging.WARNING,
    ) -> dict[str, Any]:
        """The one place that talks to Meta: auth header, timeout, logging and error conversion.

        The request goes straight to the session's adapter (its connection pool), as `Session.send` would
        send it, without what `Session.request` redoes on every call for nothing here: the environment's
        proxies and CA bundle (read once, in `__init__`), ~/.netrc, cookies (Graph sets none), hooks and
        redirects (Graph answers API calls without any: a 3xx is refused as never sent, see below).
        The bytes on the wire are the ones `Session.request` sent: same headers, same JSON body.
        """
        try:
            request = self._prepare(method, url, payload, params)
            response = self._session.get_adapter(request.url or url).send(
                request, timeout=self._timeout if timeout is None else timeout, **self._send_options
            )
            # Read here, as `Session.send` does, so that a body broken on the way back fails inside this try.
            response.content  # noqa: B018
        except (requests.ConnectionError, requests.Timeout) as exc:
            # A connect failure never reached Meta; anything later (read timeout, reset) may have.
            if isinstance(exc, requests.ConnectTimeout) or _is_connect_failure(exc):
                raise GraphConnectError(f"could not connect to the Graph API: {type(exc).__name__}") from exc
            if _is_handshake_failure(exc):
                raise GraphConnectError(
                    f"TLS handshake with the Graph API failed (nothing was sent): {_root_cause(exc)[:200]}"
                ) from exc
            raise GraphResponseLost(f"no answer from the Graph API: {type(exc).__name__}") from exc
        except _NEVER_SENT as exc:
            raise GraphConnectError(f"Graph API request failed: {type(exc).__name__}") from exc
        except requests.RequestException as exc:
            # Anything else (a broken or undecodable answer, say) happened after the request went out.
            raise GraphResponseLost(f"no usable answer from the Graph API: {type(exc).__name__}") from exc
        if response.is_redirect:
            # Graph answers API calls itself; a redirect comes from a wrong WHATSAPP_GRAPH_URL (http://) or a
            # proxy's login page, and means Meta processed nothing: retried, never "may have been sent".
            # The host only: a proxy's Location can carry credentials (user:password@) or a token.
            where = urlsplit(response.headers.get("Location", "")).hostname or "?"
            raise GraphConnectError(
                f"the Graph API request was redirected ({response.status_code} to {where}), nothing was sent:"
                " check WHATSAPP_GRAPH_URL and any proxy"
            )
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if not response.ok or (isinstance(body, dict) and "error" in body):
            error = GraphError.from_response(
                response.status_code,
                body if body is not None else response.text,
                secrets=(self._access_token,),
            )
            logger.log(error_level, "graph_error method=%s %s", method, error.describe())
            raise error
        if not isinstance(body, dict):
            raise GraphResponseLost(f"{response.status_code} response that is not a JSON object")
        logger.info(
            "graph_response method=%s status=%s body=%s", method, response.status_code, json.dumps(body)
        )
        return body

    def _prepare(
        self, method: str, url: str, payload: dict[str, Any] | None, params: dict[str, str] | None
    ) -> requests.PreparedRequest:
        """The request `PreparedRequest.prepare(method, url, headers, json=payload, params=params)` makes, and
        raising what it raises, without redoing on every call what does not change between calls (~45 µs of
        CPU a call, the worker makes two a job): the URL's parsing and quoting (once per URL, see
        `_prepared_url`) and the headers' checks (once, in `__init__`). The rest is `prepare_body`'s JSON
        branch, as requests 2.x writes it. No cookie jar (Graph sets no cookies; the adapter reads none).

        The full `prepare()` still makes what this does not copy: query parameters, credentials in the URL
        (they become a Basic Authorization header), no JSON body, headers `prepare()` refuses.
        """
        prepared_url = None if params or payload is None else _prepared_url(url)
        if prepared_url is None or self._prepared_headers is None:
            request = requests.PreparedRequest()
            request.prepare(method=method, url=url, headers=self._headers, json=payload, params=params)
            return request
        request = requests.PreparedRequest()
        request.method = method.upper()
        request.url = prepared_url
        request.headers = headers = self._prepared_headers.copy()
        try:
            body = complexjson.dumps(payload, allow_nan=False)
        except ValueError as exc:
            raise requests.exceptions.InvalidJSONError(exc, request=request) from exc
        request.body = body.encode("utf-8") if isinstance(body, str) else body
        headers["Content-Length"] = str(len(request.body))
        if "content-type" not in headers:
            headers["Content-Type"] = "application/json"
        return request


@functools.lru_cache(maxsize=64)
def _prepared_url(url: str) -> str | None:
    """requests' own `prepare_url(url)`, or None when the URL carries credentials (`prepare()` makes them a
    Basic Authorization header). What it raises (InvalidURL, MissingSchema…) is raised again on each call: an
    exception is not cached. A client's URLs are its base and a business number's id: few, hence a small
    cache, shared by all clients."""
    request = requests.PreparedRequest()
    request.prepare_url(url, None)
    assert request.url is not None
    return None if any(get_auth_from_url(request.url)) else request.url


def _prepared_headers(headers: CaseInsensitiveDict[str]) -> CaseInsensitiveDict[str] | None:
    """The headers as `prepare_headers` copies them, after its checks; None when it refuses them (a token
    with a line break, say): each call then prepares them again and fails as before, as never sent."""
    request = requests.PreparedRequest()
    try:
        request.prepare_headers(headers)
    except requests.exceptions.InvalidHeader:
        return None
    return request.headers


def _send_options(session: requests.Session, base_url: str) -> dict[str, Any]:
    """The adapter's `send` options that `Session.request` works out for a URL on `base_url`'s host: the
    proxies for that host and the CA bundle from the environment (when `session.trust_env`), merged with the
    session's own `proxies`, `verify` and `cert`. Every call goes to that host, so once is enough."""
    try:
        found = session.merge_environment_settings(base_url, {}, False, None, None)
        proxies, verify, cert = found["proxies"], found["verify"], found["cert"]
    except ValueError:
        # A base URL requests cannot parse: every call fails preparing its request (GraphConnectError).
        proxies, verify, cert = session.proxies, session.verify, session.cert
    return {"stream": False, "verify": verify, "cert": cert, "proxies": proxies}


# Errors requests raises before anything is written to the socket: resending cannot duplicate a message.
_NEVER_SENT = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidHeader,
    requests.exceptions.URLRequired,
    requests.exceptions.InvalidJSONError,
)


def _is_connect_failure(exc: Exception) -> bool:
    """requests wraps urllib3's NewConnectionError/NameResolutionError inside ConnectionError."""
    reason = repr(exc.args[0]) if exc.args else ""
    return any(name in reason for name in ("NewConnectionError", "NameResolutionError", "ConnectionRefused"))


def _is_handshake_failure(exc: Exception) -> bool:
    """A TLS failure while connecting (bad or intercepted certificate, protocol mismatch): nothing was sent.

    requests raises the same SSLError when TLS breaks later, while the answer is read (a bad record, say),
    and by then Meta may have the request. Only an error raised inside urllib3's `connect()`, which does the
    TCP connect, the handshake and the certificate checks before any request byte, counts as never sent.
    Should urllib3 ever move the handshake elsewhere, this errs on the safe side: the send is "may have gone".
    """
    if not isinstance(exc, requests.exceptions.SSLError):
        return False
    for error in _chain(exc):
        frame = error.__traceback__
        while frame is not None:
            code = frame.tb_frame.f_code
            if code.co_name == "connect" and "urllib3" in code.co_filename:
                return True
            frame = frame.tb_next
    return False


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it, outermost first."""
    chain: list[BaseException] = []
    error: BaseException | None = exc
    while error is not None and all(error is not seen for seen in chain):
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _root_cause(exc: BaseException) -> str:
    """The innermost error's text, e.g. "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: ..."."""
    root = _chain(exc)[-1]
    return f"{type(root).__name__}: {root}"
