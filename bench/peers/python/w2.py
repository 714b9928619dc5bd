"""W2 switch: T tasks x K sleep(0) = T*K switches.
usage: python3 w2.py [--uvloop] [T] [K]"""
import asyncio
import common

a = common.args()
T = int(a[0]) if len(a) > 0 else 1000
K = int(a[1]) if len(a) > 1 else 1000


async def child():
    sleep = asyncio.sleep
    for _ in range(K):
        await sleep(0)


async def main():
    t0 = common.now()
    tasks = [asyncio.create_task(child()) for _ in range(T)]
    for t in tasks:
        await t
    elapsed = common.now() - t0
    common.result(("switches_per_s", T * K / elapsed), ("elapsed_s", elapsed),
                  ("switches", T * K))


common.run(main)
