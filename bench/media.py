"""What the media phase adds to a reply: Meta's two-step download and OpenAI's transcription, against the fakes
with realistic latencies, next to the reply model's own call.

    python -m bench.media            # 20 rounds
    python -m bench.media --short    # CI: 3 rounds; fails only if broken (a wrong transcript or image)

The worker's real clients are timed (`GraphMediaClient.fetch`, `OpenAITranscriber.transcribe`, the reply
generator's call), in this process, through real HTTP on loopback. Latencies: Graph 80 ms per request and a
download paced at 2 MB/s (Meta's CDN from a small VPS), OpenAI 300 ms for a transcription and 600 ms for a
reply. Sizes: a 30-second voice note (Opus at ~16 kbit/s: 60 KB) and a 250 KB phone photo. Figures are
ratios to the reply call, so they read the same on a faster or slower machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from bench.fakes import FakeGraph, FakeOpenAI, FaultPlan
from outbound.media import GraphMediaClient
from outbound.replies import OpenAIReplyGenerator, Turn
from outbound.transcription import OpenAITranscriber

TOKEN = "bench-access-token"  # noqa: S105 (the fake Graph's, not a secret)
VOICE_BYTES = 60 * 1024
PHOTO_BYTES = 250 * 1024


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="3 rounds (CI)")
    args = parser.parse_args()
    rounds = 3 if args.short else 20
    words = b"Hello, I ordered the blue shoes last week and they have not arrived yet. "
    voice = (words * (VOICE_BYTES // len(words) + 1))[:VOICE_BYTES]
    photo = os.urandom(PHOTO_BYTES)
    with (
        FakeGraph(plan=FaultPlan(latency=0.08), access_token=TOKEN) as graph,
        FakeOpenAI(plan=FaultPlan(latency=0.3)) as transcriptions,
        FakeOpenAI(plan=FaultPlan(latency=0.6)) as replies,
    ):
        graph.download_bytes_per_second = 2 * 1024 * 1024
        media = GraphMediaClient(access_token=TOKEN, base_url=graph.url, timeout=10)
        transcriber = OpenAITranscriber.from_settings(
            api_key="sk-bench",
            base_url=f"{transcriptions.url}/v1",
            model="gpt-4o-mini-transcribe",
            timeout=10,
        )
        generator = OpenAIReplyGenerator.from_settings(
            api_key="sk-bench", base_url=f"{replies.url}/v1", model="gpt-4.1-mini", timeout=10
        )
        voice_id = graph.add_media(voice, "audio/ogg; codecs=opus")
        photo_id = graph.add_media(photo, "image/jpeg")
        voice_times, photo_times, reply_times = [], [], []
        for _ in range(rounds):
            started = time.perf_counter()
            fetched = media.fetch(media_id=voice_id, max_bytes=16 * 1024 * 1024)
            transcript = transcriber.transcribe(data=fetched.data, mime_type=fetched.mime_type)
            voice_times.append(time.perf_counter() - started)
            if transcript != voice.decode().strip():
                print("BROKEN: the transcript is not the voice note's words", file=sys.stderr)
                return 1
            started = time.perf_counter()
            image = media.fetch(media_id=photo_id, max_bytes=16 * 1024 * 1024)
            url = image.data_url()
            photo_times.append(time.perf_counter() - started)
            if image.data != photo:
                print("BROKEN: the photo's bytes changed on the way", file=sys.stderr)
                return 1
            started = time.perf_counter()
            generator.generate(
                system_prompt="bench", conversation=[Turn("user", transcript[:200], images=(url,))]
            )
            reply_times.append(time.perf_counter() - started)
    voice_ms, photo_ms, reply_ms = (
        statistics.median(t) * 1000 for t in (voice_times, photo_times, reply_times)
    )
    print(f"rounds={rounds} (medians)")
    print(f"reply model call           {reply_ms:7.0f} ms   1.00x")
    print(f"voice note: fetch+transcribe {voice_ms:5.0f} ms   {voice_ms / reply_ms:.2f}x the reply call")
    print(f"photo: fetch+encode        {photo_ms:7.0f} ms   {photo_ms / reply_ms:.2f}x the reply call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
