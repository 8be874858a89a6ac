"""CPU per HTTP call of the worker's clients, in process, against the loopback fakes (issue 10).

    python -m bench.client_cpu            # 400 calls each
    python -m bench.client_cpu --calls 2000

Each figure is process CPU time (user + system, `time.process_time`) per call, so the fake server's share (its
handler thread runs in this process) is in it too: compare figures with each other, not with a real server.
`openai create` is the SDK's typed `chat.completions.create`, for reference; `reply generate` is
`OpenAIReplyGenerator.generate`; `graph send_text` and `graph mark_read` are `WhatsAppClient`'s calls; the last
two are the floor: the same send through a bare `requests.Session.post`, and through `http.client`.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import time
from collections.abc import Callable

import requests

from bench.fakes import FakeGraph, FakeOpenAI, FaultPlan
from outbound.replies import RESPONSE_FORMAT, OpenAIReplyGenerator, Turn, openai_client
from outbound.whatsapp import Recipient, WhatsAppClient

KEY = "sk-bench-openai-key-0123456789"
TOKEN = "EAAbenchaccesstoken0123456789abcdef"  # noqa: S105 (the fake Graph's, not a secret)
PHONE_NUMBER_ID = "106540352242922"
SYSTEM_PROMPT = "You answer customers of a small shop on WhatsApp. Be brief and friendly. " * 8
CONVERSATION = [
    Turn("user", "Hi, do you have the blue jacket in size M?"),
    Turn("assistant", "Yes, we do! Would you like to order it?"),
    Turn("user", "How much is it with shipping to Lyon?"),
]


def per_call_ms(call: Callable[[], object], calls: int) -> float:
    """CPU milliseconds per call (after a warm-up), the garbage collector on as in the worker."""
    for _ in range(min(50, calls)):
        call()
    gc.collect()
    start = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - start) / calls * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    with FakeGraph(0, FaultPlan()) as graph, FakeOpenAI(0, FaultPlan()) as fake_openai:
        sdk = openai_client(api_key=KEY, base_url=f"{fake_openai.url}/v1", timeout=10.0)
        generator = OpenAIReplyGenerator(client=sdk, model="gpt-bench")
        messages = [{"role": "system", "content": SYSTEM_PROMPT}] + [
            {"role": t.role, "content": t.text} for t in CONVERSATION
        ]
        client = WhatsAppClient(access_token=TOKEN, phone_number_id=PHONE_NUMBER_ID, base_url=graph.url)
        to = Recipient(wa_id="16505551234")
        session = requests.Session()
        url = f"{graph.url}/v25.0/{PHONE_NUMBER_ID}/messages"
        body = {"messaging_product": "whatsapp", "to": "+16505551234", "type": "text", "text": {"body": "Hi"}}
        connection = http.client.HTTPConnection("127.0.0.1", graph.port, timeout=10)

        def bare_http_client() -> object:
            connection.request(
                "POST",
                url,
                body=json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            )
            return json.loads(connection.getresponse().read())

        cases: dict[str, Callable[[], object]] = {
            "openai create (SDK, typed)": lambda: sdk.chat.completions.create(  # type: ignore[call-overload]
                model="gpt-bench", messages=messages, response_format=RESPONSE_FORMAT
            ),
            "reply generate": lambda: generator.generate(
                system_prompt=SYSTEM_PROMPT, conversation=CONVERSATION
            ),
            "graph send_text": lambda: client.send_text(
                to=to, body="Thanks! It costs 49 EUR.", reply_to="wamid.IN", callback_data="1:text"
            ),
            "graph mark_read": lambda: client.mark_read(message_id="wamid.IN", typing=True, timeout=2.0),
            "requests.Session.post": lambda: session.post(
                url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            ).json(),
            "http.client": bare_http_client,
        }
        for name, call in cases.items():
            print(f"{name:28} {per_call_ms(call, args.calls):6.2f} ms CPU per call", flush=True)


if __name__ == "__main__":
    main()
