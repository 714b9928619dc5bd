"""W5 http-client: COUNT GETs of URL with CONC requests in flight over a
keep-alive pool (aiohttp ClientSession, TCPConnector(limit=CONC)).
usage: python3 w5.py [--uvloop] URL COUNT CONC"""
import asyncio

import aiohttp
import common

a = common.args()
URL, COUNT, CONC = a[0], int(a[1]), int(a[2])


async def main():
    connector = aiohttp.TCPConnector(limit=CONC, limit_per_host=CONC)
    remaining = COUNT
    total = 0
    bad = 0

    async with aiohttp.ClientSession(connector=connector,
                                     auto_decompress=False) as session:
        async def worker():
            nonlocal remaining, total, bad
            while remaining > 0:
                remaining -= 1
                async with session.get(URL) as r:
                    body = await r.read()
                    total += len(body)
                    if r.status != 200:
                        bad += 1

        t0 = common.now()
        await asyncio.gather(*(worker() for _ in range(CONC)))
        elapsed = common.now() - t0
    assert bad == 0, "%d non-200 responses" % bad
    common.result(("req_per_s", COUNT / elapsed),
                  ("mb_per_s", total / elapsed / 1e6),
                  ("elapsed_s", elapsed), ("requests", COUNT),
                  ("bytes", total))


common.run(main)
