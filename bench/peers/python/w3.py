"""W3 sleepers: N tasks each sleeping a uniform random 0-1 s (fixed seed).
Reports wall s, CPU s (user+sys) and RSS per parked task, measured right
after spawning all and yielding once.
usage: python3 w3.py [--uvloop] [N]"""
import asyncio
import gc
import random
import common

a = common.args()
N = int(a[0]) if a else 100000
random.seed(42)
delays = [random.random() for _ in range(N)]


async def sleeper(d):
    await asyncio.sleep(d)


async def main():
    gc.collect()
    rss0 = common.rss()
    t0, c0 = common.now(), common.cpu()
    tasks = [asyncio.create_task(sleeper(d)) for d in delays]
    await asyncio.sleep(0)          # every task has started and parked
    rss1, hwm1 = common.rss(), common.hwm()
    for t in tasks:
        await t
    wall, cpu = common.now() - t0, common.cpu() - c0
    common.result(("wall_s", wall), ("cpu_s", cpu),
                  ("bytes_per_task", (rss1 - rss0) / N),
                  ("hwm_bytes_per_task", (hwm1 - rss0) / N), ("tasks", N))


common.run(main)
