"""W1 spawn: N tasks that each return a number at once; await all; sum.
usage: python3 w1.py [--uvloop] [N]"""
import asyncio
import common

a = common.args()
N = int(a[0]) if a else 200000


async def child(i):
    return i


async def main():
    t0 = common.now()
    tasks = [asyncio.create_task(child(i)) for i in range(N)]
    s = 0
    for t in tasks:
        s += await t
    elapsed = common.now() - t0
    assert s == N * (N - 1) // 2
    common.result(("tasks_per_s", N / elapsed), ("elapsed_s", elapsed),
                  ("tasks", N), ("sum", s))


common.run(main)
