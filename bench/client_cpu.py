"""CPU per HTTP call of the worker's clients against the loopback fakes (issue 10).

    python -m bench.client_cpu                 # 400 calls each, the fakes in a process of their own
    python -m bench.client_cpu --in-process    # the fakes in this process: their CPU share counted too
    python -m bench.client_cpu --calls 2000

Each figure is this process's CPU time (user + system, `time.process_time`) per call: the client's share alone,
what the worker pays, unless `--in-process` runs the fakes' handler threads here too.
`openai create` is the SDK's typed `chat.completions.create`, for reference; `reply generate` is
`OpenAIReplyGenerator.generate`; `graph send_text` and `graph mark_read` are `WhatsAppClient`'s calls; the last
two are the floor: the same send through a bare `requests.Session.post`, and through `http.client`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

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


@contextlib.contextmanager
def fakes(*, in_process: bool) -> Iterator[tuple[int, int]]:
    """The fake Graph's and the fake OpenAI's ports, the servers running here or in a child process."""
    if in_process:
        with FakeGraph(0, FaultPlan()) as graph, FakeOpenAI(0, FaultPlan()) as fake_openai:
            yield graph.port, fake_openai.port
        return
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    command = [
        sys.executable,
        "-m",
        "bench.fakes",
        "--graph-port",
        str(ports[0]),
        "--openai-port",
        str(ports[1]),
    ]
    child = subprocess.Popen(
        [*command, "--graph-latency", "0", "--openai-latency", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        child.stdout.readline()  # "fake Graph at …": both are listening
        yield ports[0], ports[1]
    finally:
        child.terminate()
        child.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--in-process", action="store_true", help="run the fakes in this process")
    args = parser.parse_args()
    with fakes(in_process=args.in_process) as (graph_port, openai_port):
        graph_url, openai_url = f"http://127.0.0.1:{graph_port}", f"http://127.0.0.1:{openai_port}"
        sdk = openai_client(api_key=KEY, base_url=f"{openai_url}/v1", timeout=10.0)
        generator = OpenAIReplyGenerator(client=sdk, model="gpt-bench")
        messages = [{"role": "system", "content": SYSTEM_PROMPT}] + [
            {"role": t.role, "content": t.text} for t in CONVERSATION
        ]
        client = WhatsAppClient(access_token=TOKEN, phone_number_id=PHONE_NUMBER_ID, base_url=graph_url)
        to = Recipient(wa_id="16505551234")
        session = requests.Session()
        url = f"{graph_url}/v25.0/{PHONE_NUMBER_ID}/messages"
        body = {"messaging_product": "whatsapp", "to": "+16505551234", "type": "text", "text": {"body": "Hi"}}
        connection = http.client.HTTPConnection("127.0.0.1", graph_port, timeout=10)

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
