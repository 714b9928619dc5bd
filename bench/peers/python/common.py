"""Helpers shared by the Python peers (Debian's /usr/bin/python3).

Every program prints one line `RESULT key=value ...`; `--uvloop` selects
uvloop's event loop instead of asyncio's default one.
"""
import asyncio
import sys
import time

now = time.perf_counter          # monotonic wall clock
cpu = time.process_time          # user + sys of this process


def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def rss():
    return status("VmRSS")


def hwm():
    return status("VmHWM")


def args():
    """Positional arguments without the --uvloop flag."""
    return [a for a in sys.argv[1:] if not a.startswith("--")]


def run(main):
    """Runs main() on asyncio's loop, or uvloop's with --uvloop."""
    if "--uvloop" in sys.argv:
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def result(*pairs):
    parts = []
    for k, v in pairs:
        if isinstance(v, float):
            v = "%.6g" % v
        parts.append("%s=%s" % (k, v))
    print("RESULT " + " ".join(parts), flush=True)
