"""The reference: the bare openai SDK (AsyncOpenAI + a semaphore), nothing persisted, against `gen simulate`.

    python bench/bare_sdk.py --base-url http://127.0.0.1:PORT/v1 --calls 3000 --concurrency 200 [--rpm 1200]

Prints calls per second, CPU ms per call and the most calls it had in flight. With --rpm it paces starts evenly
(the ideal a limiter can reach)."""
from __future__ import annotations

import argparse
import asyncio
import resource
import time


async def main_async(args: argparse.Namespace) -> None:
    from openai import AsyncOpenAI, DefaultAioHttpClient

    client = AsyncOpenAI(base_url=args.base_url, api_key="none", max_retries=0, http_client=DefaultAioHttpClient())
    gate = asyncio.Semaphore(args.concurrency)
    in_flight = peak = 0
    interval = 60.0 / args.rpm if args.rpm else 0.0
    t0 = time.monotonic()

    async def one(i: int) -> None:
        nonlocal in_flight, peak
        if interval:
            await asyncio.sleep(max(0.0, t0 + i * interval - time.monotonic()))
        async with gate:
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                await client.chat.completions.create(model="sim-1", max_tokens=256, messages=[
                    {"role": "user", "content": f"Benchmark prompt {i}: say something about the number {i}."}])
            finally:
                in_flight -= 1

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(args.calls)))
    elapsed = time.monotonic() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    await client.close()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    print(f"calls={args.calls} elapsed={elapsed:.2f}s calls_per_s={args.calls / elapsed:.1f} "
          f"cpu_ms_per_call={cpu / args.calls * 1000:.2f} peak_in_flight={peak}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rpm", type=float, default=None)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
