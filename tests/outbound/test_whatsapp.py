"""WhatsAppClient against `responses`: request shape, Meta's error body, transport failure classification."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import requests
import responses
from requests.sessions import merge_setting
from requests.structures import CaseInsensitiveDict
from responses import matchers

from bench.fakes import FakeGraph, FaultPlan, self_signed_certificate
from outbound.exceptions import GraphConnectError, GraphError, GraphResponseLost
from outbound.whatsapp import (
    USER_AGENT,
    Recipient,
    WhatsAppClient,
    _prepared_url,
    buttons_message,
    template_message,
    text_message,
)
from tests.outbound.conftest import GRAPH_MESSAGES_URL, graph_err, graph_ok

TOKEN = "EAAtestaccesstoken0123456789abcdef"
TO = Recipient(wa_id="16505551234")


@pytest.fixture
def client() -> WhatsAppClient:
    return WhatsAppClient(
        access_token=TOKEN, phone_number_id="106540352242922", base_url="https://graph.test/", timeout=7.5
    )


@pytest.fixture
def graph():
    with responses.RequestsMock() as mock:
        yield mock


def test_text_request_body_headers_and_timeout(client, graph):
    call = graph.post(
        GRAPH_MESSAGES_URL,
        json=graph_ok("wamid.OUT"),
        match=[
            matchers.json_params_matcher(
                {
                    "messaging_product": "whatsapp",
                    "recipient_type": "individual",
                    "to": "+16505551234",
                    "type": "text",
                    "text": {"preview_url": False, "body": "Hi there"},
                    "biz_opaque_callback_data": "key:text",
                    "context": {"message_id": "wamid.IN"},
                }
            ),
            matchers.header_matcher({"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}),
            matchers.request_kwargs_matcher({"timeout": 7.5}),
        ],
    )
    result = client.send_text(to=TO, body="Hi there", reply_to="wamid.IN", callback_data="key:text")
    assert call.call_count == 1
    assert result.wa_message_id == "wamid.OUT"
    assert result.message_status == ""
    assert result.response["messages"][0]["id"] == "wamid.OUT"


def test_text_without_reply_to_has_no_context(client, graph):
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    client.send_text(to=TO, body="x", reply_to=None, callback_data="k:text")
    assert b"context" not in graph.calls[0].request.body


def test_template_request_and_pacing_status(client, graph):
    graph.post(
        GRAPH_MESSAGES_URL,
        json=graph_ok("wamid.T", message_status="held_for_quality_assessment"),
        match=[
            matchers.json_params_matcher(
                {
                    "messaging_product": "whatsapp",
                    "recipient_type": "individual",
                    "to": "+16505551234",
                    "type": "template",
                    "template": {
                        "name": "reply_follow_up",
                        "language": {"code": "en_US"},
                        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Sheena"}]}],
                    },
                    "biz_opaque_callback_data": "key:template",
                }
            )
        ],
    )
    result = client.send_template(
        to=TO,
        name="reply_follow_up",
        language="en_US",
        body_parameters=["Sheena"],
        callback_data="key:template",
    )
    assert (result.wa_message_id, result.message_status) == ("wamid.T", "held_for_quality_assessment")


def test_recipient_by_business_scoped_user_id(client, graph):
    graph.post(
        GRAPH_MESSAGES_URL,
        json=graph_ok(),
        match=[matchers.json_params_matcher({"recipient": "US.123"}, strict_match=False)],
    )
    client.send_text(to=Recipient(wa_id=None, user_id="US.123"), body="x", reply_to=None, callback_data="k")


def test_each_message_leaves_from_its_recipients_business_number(client, graph):
    second = "https://graph.test/v25.0/111222333444555/messages"
    graph.post(second, json=graph_ok("wamid.2"))
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.1"))
    on_second = Recipient(wa_id="16505551234", phone_number_id="111222333444555")
    client.send_text(to=on_second, body="x", reply_to=None, callback_data="k")
    client.send_template(to=on_second, name="t", language="en_US", body_parameters=[], callback_data="k")
    client.send_buttons(to=on_second, body="x", buttons=[("a", "A")], reply_to=None, callback_data="k")
    # No number on the recipient: the client's default number.
    client.send_text(to=TO, body="x", reply_to=None, callback_data="k")
    assert [call.request.url for call in graph.calls] == [second, second, second, GRAPH_MESSAGES_URL]


def test_meta_error_body_is_parsed(client, graph):
    graph.post(
        GRAPH_MESSAGES_URL,
        status=400,
        json=graph_err(131026, "Message undeliverable", details="not on WhatsApp", fbtrace_id="Az8or2yh"),
    )
    with pytest.raises(GraphError) as raised:
        client.send_text(to=TO, body="x", reply_to=None, callback_data="k")
    exc = raised.value
    assert (exc.http_status, exc.code, exc.details, exc.fbtrace_id) == (
        400,
        131026,
        "not on WhatsApp",
        "Az8or2yh",
    )
    assert "code=131026" in exc.describe()
    assert "fbtrace_id=Az8or2yh" in exc.describe()


def test_error_data_as_a_string_and_a_non_json_error(client, graph):
    body = graph_err(132001)
    body["error"]["error_data"] = "template name does not exist"
    graph.post(GRAPH_MESSAGES_URL, status=404, json=body)
    graph.post(GRAPH_MESSAGES_URL, status=502, body="<html>Bad gateway</html>")
    with pytest.raises(GraphError) as first:
        client.send_text(to=TO, body="x", reply_to=None, callback_data="k")
    assert (first.value.code, first.value.details) == (132001, "template name does not exist")
    with pytest.raises(GraphError) as second:
        client.send_text(to=TO, body="x", reply_to=None, callback_data="k")
    assert (second.value.http_status, second.value.code) == (502, None)
    assert "Bad gateway" in second.value.message


def test_error_body_inside_a_200_is_an_error(client, graph):
    graph.post(GRAPH_MESSAGES_URL, status=200, json=graph_err(131000))
    with pytest.raises(GraphError) as raised:
        client.send_text(to=TO, body="x", reply_to=None, callback_data="k")
    assert raised.value.code == 131000


def test_200_without_a_message_id_is_a_lost_response_not_a_send(client, graph):
    graph.post(GRAPH_MESSAGES_URL, json={"messaging_product": "whatsapp", "messages": []})
    with pytest.raises(GraphResponseLost, match=r"messages\[0\].id"):
        client.send_text(to=TO, body="x", reply_to=None, callback_data="k")


def test_200_that_is_not_json_is_a_lost_response(client, graph):
    graph.post(GRAPH_MESSAGES_URL, status=200, body="ok")
    with pytest.raises(GraphResponseLost):
        client.send_text(to=TO, body="x", reply_to=None, callback_data="k")


@pytest.mark.parametrize(
    "error",
    [
        requests.ConnectTimeout("connect timed out"),
        requests.ConnectionError(
            "HTTPSConnectionPool: Max retries exceeded (Caused by NewConnectionError('Failed to establish a new connection: [Errno 111] Connection refused'))"
        ),
        requests.exceptions.InvalidURL("bad url"),
    ],
)
def test_failures_before_the_request_left_are_connect_errors(client, graph, error):
    graph.post(GRAPH_MESSAGES_URL, body=error)
    with pytest.raises(GraphConnectError):
        client.send_text(to=TO, body="x", reply_to=None, callback_data="k")


@pytest.mark.parametrize(
    ("status", "location"),
    [
        (301, "https://login.proxy.example/?next=/x&t=s3cret"),
        (302, "https://alice:s3cret@login.proxy.example/"),
        (307, "https://login.proxy.example:8443/s3cret"),
        (308, "https://login.proxy.example/?next=/x&t=s3cret"),
    ],
)
def test_a_redirect_is_never_followed_and_never_taken_for_a_send(client, graph, status, location):
    # A proxy's login page or an http:// WHATSAPP_GRAPH_URL: Meta processed nothing, so the send is retried
    # rather than parked as "may have reached Meta"; the message names where it went (host only: no
    # credentials, path or query from the Location).
    graph.post(GRAPH_MESSAGES_URL, status=status, headers={"Location": location})
    with pytest.raises(GraphConnectError, match=rf"redirected \({status} to login.proxy.example\)") as raised:
        client.send_text(to=TO, body="x", reply_to=None, callback_data="k")
    assert "s3cret" not in str(raised.value)
    assert len(graph.calls) == 1


@pytest.mark.parametrize(
    "error",
    [
        requests.ReadTimeout("read timed out"),
        requests.ConnectionError(
            "('Connection aborted.', RemoteDisconnected('Remote end closed connection'))"
        ),
        # Raised while reading the answer's body: the request certainly reached Meta.
        requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"),
        requests.exceptions.ContentDecodingError("bad gzip"),
    ],
)
def test_failures_after_the_request_left_are_lost_responses(client, graph, error):
    graph.post(GRAPH_MESSAGES_URL, body=error)
    with pytest.raises(GraphResponseLost):
        client.send_text(to=TO, body="x", reply_to=None, callback_data="k")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 that no CA the client trusts has signed."""
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def test_a_certificate_the_client_does_not_trust_is_a_connect_error(certificate):
    # A bad certificate or an intercepting proxy: the TLS handshake fails before any request byte is sent.
    with FakeGraph(tls=certificate) as meta:
        client = WhatsAppClient(access_token=TOKEN, phone_number_id="106540352242922", base_url=meta.url)
        with pytest.raises(GraphConnectError, match="CERTIFICATE_VERIFY_FAILED") as raised:
            client.send_text(to=TO, body="x", reply_to=None, callback_data="k")
    assert "TLS handshake" in str(raised.value)
    assert meta.requests == []


def test_tls_breaking_after_the_request_arrived_is_a_lost_response(certificate):
    # The same requests.SSLError, raised while reading the answer: Meta has the request, so it may have sent.
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE, when set, wins over `verify`
    session.verify = str(certificate[0])
    with FakeGraph(plan=FaultPlan(corrupt_responses=1), tls=certificate) as meta:
        client = WhatsAppClient(
            access_token=TOKEN, phone_number_id="106540352242922", base_url=meta.url, session=session
        )
        with pytest.raises(GraphResponseLost, match="SSLError"):
            client.send_text(to=TO, body="x", reply_to=None, callback_data="k")
        assert len(meta.accepted()) == 1
        # Trusted and answering normally, the same fake accepts the send.
        assert client.send_text(to=TO, body="x", reply_to=None, callback_data="k").wa_message_id


def test_token_echoed_in_an_error_is_never_logged_or_kept(client, graph, caplog):
    caplog.set_level(logging.DEBUG)
    graph.post(
        GRAPH_MESSAGES_URL,
        status=401,
        json=graph_err(190, f"Error validating access token {TOKEN} has expired", details=f"token {TOKEN}"),
    )
    with pytest.raises(GraphError) as raised:
        client.send_text(to=TO, body="x", reply_to=None, callback_data="k")
    assert raised.value.code == 190
    assert TOKEN not in raised.value.describe()
    assert TOKEN not in str(raised.value)
    assert "graph_error" in caplog.text
    assert TOKEN not in caplog.text


def test_message_templates_lists_the_exact_name_with_the_bearer_token(client, graph):
    graph.get(
        "https://graph.test/v25.0/102290129340398/message_templates",
        match=[
            matchers.query_param_matcher(
                {
                    "name": "reply",
                    "fields": "name,language,status,category,id,rejected_reason",
                    "limit": "100",
                }
            ),
            matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"}),
        ],
        json={
            "data": [
                {"name": "reply", "language": "en_US", "status": "APPROVED", "id": "1"},
                {"name": "reply_v2", "language": "en_US", "status": "APPROVED", "id": "2"},
            ]
        },
    )
    found = client.message_templates(account_id="102290129340398", name="reply")
    assert [t["id"] for t in found] == ["1"]


# ------------------------------------------------------------------ the adapter's send, not Session.request
def test_the_request_is_the_one_session_request_prepared(graph):
    # `_request` hands the adapter a request it prepared itself: headers (and their order), body, URL and the
    # adapter's options must be those `Session.request` produced.
    session = requests.Session()
    client = WhatsAppClient(
        access_token=TOKEN,
        phone_number_id="106540352242922",
        base_url="https://graph.test/",
        timeout=7.5,
        session=session,
    )
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    templates_url = "https://graph.test/v25.0/102290129340398/message_templates"
    graph.get(templates_url, json={"data": []})
    auth = {"Authorization": f"Bearer {TOKEN}", "User-Agent": USER_AGENT}
    client.send_text(to=TO, body='Caf\u00e9 \U0001f600 "ok"', reply_to="wamid.IN", callback_data="k:text")
    message = text_message(
        to=TO, body='Caf\u00e9 \U0001f600 "ok"', reply_to="wamid.IN", callback_data="k:text"
    )
    session.request("POST", GRAPH_MESSAGES_URL, json=message, headers=auth, timeout=7.5)
    client.message_templates(account_id="102290129340398", name="re ply")
    params = {"name": "re ply", "fields": "name,language,status,category,id,rejected_reason", "limit": "100"}
    session.request("GET", templates_url, params=params, headers=auth, timeout=7.5)
    for ours, theirs in (graph.calls[0:2], graph.calls[2:4]):
        assert (ours.request.method, ours.request.url) == (theirs.request.method, theirs.request.url)
        assert list(ours.request.headers.items()) == list(theirs.request.headers.items())
        assert ours.request.body == theirs.request.body
        assert ours.request.req_kwargs == theirs.request.req_kwargs
    assert graph.calls[2].request.body is None
    assert graph.calls[0].request.req_kwargs["timeout"] == 7.5


@pytest.fixture
def no_proxy_variables(monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_proxy_is_read_from_the_environment_once_at_start_up(no_proxy_variables):
    monkeypatch = no_proxy_variables
    with FakeGraph() as proxy, FakeGraph() as meta:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        proxied = WhatsAppClient(
            access_token=TOKEN, phone_number_id="106540352242922", base_url="http://graph.test"
        )
        monkeypatch.delenv("HTTP_PROXY")
        # Unset since: still the proxy's (the environment was read when the client was made).
        assert proxied.send_text(to=TO, body="x", reply_to=None, callback_data="k").wa_message_id
        assert proxied.mark_read(message_id="wamid.IN", typing=True, timeout=2.0) is True
        assert [r["path"] for r in proxy.requests] == ["http://graph.test/v25.0/106540352242922/messages"] * 2
        assert proxy.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"

        direct = WhatsAppClient(access_token=TOKEN, phone_number_id="106540352242922", base_url=meta.url)
        # A proxy that does not answer, set after the client was made: not used.
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        assert direct.send_text(to=TO, body="x", reply_to=None, callback_data="k").wa_message_id
        assert len(meta.accepted()) == 1


def test_no_proxy_is_honoured(no_proxy_variables):
    monkeypatch = no_proxy_variables
    with FakeGraph() as meta:
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        client = WhatsAppClient(access_token=TOKEN, phone_number_id="106540352242922", base_url=meta.url)
        assert client.send_text(to=TO, body="x", reply_to=None, callback_data="k").wa_message_id
        assert len(meta.accepted()) == 1


def test_the_ca_bundle_is_read_from_the_environment_once_at_start_up(certificate, monkeypatch):
    # REQUESTS_CA_BUNDLE names the certificates to trust (a company proxy's CA, say).
    with FakeGraph(tls=certificate) as meta:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0]))
        trusting = WhatsAppClient(access_token=TOKEN, phone_number_id="106540352242922", base_url=meta.url)
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        assert trusting.send_text(to=TO, body="x", reply_to=None, callback_data="k").wa_message_id
        # Made without it: the certificate is not trusted, whatever the environment says later.
        distrusting = WhatsAppClient(access_token=TOKEN, phone_number_id="106540352242922", base_url=meta.url)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0]))
        with pytest.raises(GraphConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            distrusting.send_text(to=TO, body="x", reply_to=None, callback_data="k")
        assert len(meta.accepted()) == 1


@pytest.mark.parametrize(
    "base_url",
    [
        "http://[graph",  # InvalidURL (unparseable)
        "graph.test",  # MissingSchema
        "http://*graph.test",  # InvalidURL (invalid label)
        "http:///",  # InvalidURL (no host)
        "ftp://graph.test",  # InvalidSchema (no adapter)
    ],
)
def test_a_base_url_requests_cannot_parse_fails_each_call_as_never_sent(graph, base_url):
    client = WhatsAppClient(access_token=TOKEN, phone_number_id="106540352242922", base_url=base_url)
    # Twice each: the URL's failure is not cached as a prepared URL.
    for _ in range(2):
        with pytest.raises(GraphConnectError):
            client.send_text(to=TO, body="x", reply_to=None, callback_data="k")
        with pytest.raises(GraphConnectError):
            client.mark_read(message_id="wamid.IN", typing=True, timeout=2.0)
    assert not graph.calls


def test_a_payload_that_is_not_json_or_a_header_requests_refuses_is_never_sent(client, graph):
    # NaN: requests refuses it (allow_nan=False), before anything is sent.
    for _ in range(2):
        with pytest.raises(GraphConnectError, match="InvalidJSONError"):
            client.send_template(
                to=TO, name="t", language="en_US", body_parameters=[float("nan")], callback_data="k"
            )
    # A token read with its line break: every call fails as never sent, as `prepare()` made it.
    broken = WhatsAppClient(
        access_token=TOKEN + "\n", phone_number_id="106540352242922", base_url="https://graph.test"
    )
    with pytest.raises(GraphConnectError, match="InvalidHeader"):
        broken.send_text(to=TO, body="x", reply_to=None, callback_data="k")
    assert not graph.calls


# ----------------------------------------------- the request `_request` builds, against requests' `prepare()`
def _calls(client: WhatsAppClient, base: str) -> list[tuple[Any, str, str, dict[str, Any] | None, Any]]:
    """Each of the client's calls, with what `prepare()` is given for it: method, URL, JSON body, params."""
    body = 'Caf\u00e9 \U0001f600 "ok" </script> \\ \u2028'
    on_second = Recipient(wa_id="16505551234", phone_number_id="111222333444555")
    messages, second = f"{base}/106540352242922/messages", f"{base}/111222333444555/messages"
    buttons = [("yes", "Oui \u00e0 vous"), ("no", "No")]
    read: dict[str, Any] = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN"}
    fields = "name,language,status,category,id,rejected_reason"
    return [
        (
            lambda: client.send_text(to=TO, body=body, reply_to="wamid.IN", callback_data="k:text"),
            "POST",
            messages,
            text_message(to=TO, body=body, reply_to="wamid.IN", callback_data="k:text"),
            None,
        ),
        (
            lambda: client.send_text(to=on_second, body="x", reply_to=None, callback_data="k"),
            "POST",
            second,
            text_message(to=on_second, body="x", reply_to=None, callback_data="k"),
            None,
        ),
        (
            lambda: client.send_buttons(
                to=TO, body=body, buttons=buttons, reply_to="wamid.IN", callback_data="k:b"
            ),
            "POST",
            messages,
            buttons_message(to=TO, body=body, buttons=buttons, reply_to="wamid.IN", callback_data="k:b"),
            None,
        ),
        (
            lambda: client.send_template(
                to=TO, name="reply", language="fr", body_parameters=[body, "2"], callback_data="k:t"
            ),
            "POST",
            messages,
            template_message(
                to=TO, name="reply", language="fr", body_parameters=[body, "2"], callback_data="k:t"
            ),
            None,
        ),
        (
            lambda: client.mark_read(message_id="wamid.IN", typing=True, timeout=2.0),
            "POST",
            messages,
            {**read, "typing_indicator": {"type": "text"}},
            None,
        ),
        (
            lambda: client.mark_read(
                message_id="wamid.IN", typing=False, timeout=2.0, phone_number_id="111222333444555"
            ),
            "POST",
            second,
            read,
            None,
        ),
        (
            lambda: client.message_templates(account_id="102290129340398", name="re ply/\u00e9"),
            "GET",
            f"{base}/102290129340398/message_templates",
            None,
            {"name": "re ply/\u00e9", "fields": fields, "limit": "100"},
        ),
    ]


@pytest.mark.parametrize(
    ("base_url", "session_headers"),
    [
        ("https://graph.test/", {}),
        # A Content-Type of the session's own is kept ("only if absent"), its other headers sent too.
        ("https://graph.test", {"Content-Type": "application/json; charset=utf-8", "X-Trace": "1"}),
        # Credentials in the URL: `prepare()` turns them into a Basic Authorization header.
        ("https://user:p%40ss@graph.test", {}),
        # A URL requests re-quotes and whose host it lower-cases... or not: whatever `prepare_url` makes.
        ("http://Graph.TEST:8080/a b/%7Ex", {}),
    ],
)
def test_each_call_sends_what_requests_prepare_makes(graph, base_url, session_headers):
    # The request handed to the adapter, field by field and header by header (in order), is the one
    # `PreparedRequest.prepare()` makes from the same method, URL, headers, JSON and params. Each call is made
    # twice: once preparing its URL, once from the cache.
    _prepared_url.cache_clear()
    session = requests.Session()
    session.headers.update(session_headers)
    client = WhatsAppClient(
        access_token=TOKEN, phone_number_id="106540352242922", base_url=base_url, session=session
    )
    graph.add(responses.POST, re.compile(".*"), json=graph_ok())
    graph.add(responses.GET, re.compile(".*"), json={"data": []})
    headers = merge_setting(
        {"Authorization": f"Bearer {TOKEN}", "User-Agent": USER_AGENT},
        session.headers,
        dict_class=CaseInsensitiveDict,
    )
    expected = []
    for call, method, url, payload, params in _calls(client, f"{base_url.rstrip('/')}/v25.0") * 2:
        call()
        prepared = requests.PreparedRequest()
        prepared.prepare(method=method, url=url, headers=headers, json=payload, params=params)
        expected.append(prepared)
    assert len(graph.calls) == len(expected) == 14
    for call, theirs in zip(graph.calls, expected, strict=True):
        ours = call.request
        assert (ours.method, ours.url, ours.body) == (theirs.method, theirs.url, theirs.body)
        assert list(ours.headers.items()) == list(theirs.headers.items())
        assert type(ours.headers) is type(theirs.headers)
    if "@" in base_url:
        assert graph.calls[0].request.headers["Authorization"].startswith("Basic ")
    if session_headers:
        assert graph.calls[0].request.headers["Content-Type"] == "application/json; charset=utf-8"
