import hashlib
import hmac

import pytest

from webhooks.signatures import sign, verify_signature

SECRET = "app-secret"
BODY = b'{"object":"whatsapp_business_account","entry":[]}'


def _hex(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_good_signature():
    assert verify_signature(body=BODY, header=f"sha256={_hex(BODY)}", app_secret=SECRET) is True


def test_sign_produces_what_verify_accepts():
    header = sign(body=BODY, app_secret=SECRET)
    assert header == f"sha256={_hex(BODY)}"
    assert verify_signature(body=BODY, header=header, app_secret=SECRET) is True


@pytest.mark.parametrize("header", [None, "", "sha256=", "sha256"])
def test_missing_or_empty_header(header):
    assert verify_signature(body=BODY, header=header, app_secret=SECRET) is False


def test_wrong_secret():
    header = sign(body=BODY, app_secret="another-secret")
    assert verify_signature(body=BODY, header=header, app_secret=SECRET) is False


def test_empty_app_secret_never_verifies():
    # An unconfigured secret must not turn into "HMAC keyed with ''", which anyone can compute.
    header = sign(body=BODY, app_secret="")
    assert verify_signature(body=BODY, header=header, app_secret="") is False


@pytest.mark.parametrize(
    "header",
    [
        f"sha1={_hex(BODY)}",
        f"SHA256={_hex(BODY)}",
        _hex(BODY),
        f"sha512={_hex(BODY)}",
        f" sha256={_hex(BODY)}x",
    ],
)
def test_wrong_prefix_or_shape(header):
    assert verify_signature(body=BODY, header=header, app_secret=SECRET) is False


def test_body_changed_after_signing():
    header = sign(body=BODY, app_secret=SECRET)
    assert verify_signature(body=BODY + b" ", header=header, app_secret=SECRET) is False
    assert verify_signature(body=BODY.replace(b"[]", b"[{}]"), header=header, app_secret=SECRET) is False


def test_signature_is_over_raw_bytes_not_reserialised_json():
    body = b'{"text": "caf\\u00e9 \\ud83d\\ude00 a@b"}'
    header = sign(body=body, app_secret=SECRET)
    assert verify_signature(body=body, header=header, app_secret=SECRET) is True
    assert (
        verify_signature(body='{"text": "café 😀 a@b"}'.encode(), header=header, app_secret=SECRET) is False
    )


def test_non_ascii_body_signed_correctly():
    body = '{"text": "Grüße, 你好 👋"}'.encode()
    assert verify_signature(body=body, header=sign(body=body, app_secret=SECRET), app_secret=SECRET) is True


def test_non_ascii_header_is_wrong_not_an_error():
    assert verify_signature(body=BODY, header="sha256=" + "é" * 64, app_secret=SECRET) is False
    assert verify_signature(body=BODY, header=f"sha256={_hex(BODY)[:-1]}é", app_secret=SECRET) is False


def test_truncated_or_extended_digest():
    digest = _hex(BODY)
    assert verify_signature(body=BODY, header=f"sha256={digest[:-2]}", app_secret=SECRET) is False
    assert verify_signature(body=BODY, header=f"sha256={digest}00", app_secret=SECRET) is False


def test_non_ascii_secret():
    secret = "sécret-ü"
    header = sign(body=BODY, app_secret=secret)
    assert verify_signature(body=BODY, header=header, app_secret=secret) is True
    assert verify_signature(body=BODY, header=header, app_secret="secret-u") is False
