"""W4 tcp-echo server on asyncio (or uvloop with --uvloop).

    python3 w4.py [--uvloop] [--streams] [port]

--streams: asyncio streams (start_server, reader.read + writer.write +
await writer.drain(), the coroutine style); default: a Protocol whose
data_received writes the data back (the callback style). Prints
"READY <port>" and serves until killed.
"""
import asyncio
import sys

from common import args, run


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def handle(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()


async def main():
    a = args()
    port = int(a[0]) if a else 0
    loop = asyncio.get_running_loop()
    if "--streams" in sys.argv:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
    else:
        server = await loop.create_server(Echo, "127.0.0.1", port)
    print("READY %d" % server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


run(main)
