#!/usr/bin/python3
"""Misbehaving HTTP servers for the fault specs, on real sockets.

    bad_server.py [MODE] [PORT]

Listens on 127.0.0.1 (ephemeral port unless PORT is given), prints the port
on stdout (one line, flushed), and answers every request according to MODE
until killed (SIGTERM/SIGINT):

  short          (default) a 200 announcing Content-Length: 100000, then
                 1000 bytes, then close
  reset          a 200 announcing 100000 bytes, 1000 bytes, then a TCP
                 reset (SO_LINGER 0)
  close_headers  half a header block ("HTTP/1.1 200 OK\\r\\nContent-Ty"),
                 then close
  garbage        a status line of garbage bytes, then close
  endless        a chunked 200 whose chunks never end (64 KiB each, as
                 fast as the client reads)
  slowloris      the status line, one byte every 2 seconds, never finished
  huge_length    a 200 announcing Content-Length: 2000000000, 10 bytes,
                 then close
  raw            the request body, verbatim, as the whole response (the
                 fuzzer sends the response it wants back), then close
"""
import signal
import socket
import struct
import sys
import threading
import time

ANNOUNCED = 100000
SENT = 1000


def read_request(conn):
    """Reads a request head and its Content-Length body; returns the body
    (None when the peer went away first)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > 1 << 20:
            return None
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip() or b"0")
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return body[:length]


def head(length):
    return (
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: application/octet-stream\r\n"
        "Content-Length: %d\r\n"
        "Connection: keep-alive\r\n"
        "\r\n" % length
    ).encode()


def mode_short(conn):
    conn.sendall(head(ANNOUNCED) + b"x" * SENT)


def mode_reset(conn):
    conn.sendall(head(ANNOUNCED) + b"x" * SENT)
    time.sleep(0.05)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def mode_close_headers(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Ty")


def mode_garbage(conn):
    conn.sendall(b"\x16\x03\x01\x00\xa5HTTX/9.9 abc \xff\xfe\r\n\r\n")


def mode_endless(conn):
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n")
    chunk = b"10000\r\n" + b"e" * 0x10000 + b"\r\n"
    while True:
        conn.sendall(chunk)


def mode_slowloris(conn):
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: ":
        conn.sendall(bytes([byte]))
        time.sleep(2)
    while True:
        conn.sendall(b"z")
        time.sleep(2)


def mode_huge_length(conn):
    conn.sendall(head(2000000000) + b"0123456789")


def mode_raw(conn, body):
    conn.sendall(body)


MODES = {
    "short": mode_short,
    "reset": mode_reset,
    "close_headers": mode_close_headers,
    "garbage": mode_garbage,
    "endless": mode_endless,
    "slowloris": mode_slowloris,
    "huge_length": mode_huge_length,
    "raw": mode_raw,
}


def handle(conn, mode):
    try:
        conn.settimeout(60)
        body = read_request(conn)
        if body is None:
            return
        if mode == "raw":
            mode_raw(conn, body)
        else:
            MODES[mode](conn)
    except OSError:
        pass
    finally:
        if mode != "reset":
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        conn.close()


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    mode, port = "short", 0
    for a in sys.argv[1:]:
        if a.isdigit():
            port = int(a)
        elif a in MODES:
            mode = a
        else:
            sys.exit("bad_server.py: unknown mode %r (modes: %s)"
                     % (a, ", ".join(sorted(MODES))))
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(128)
    sys.stdout.write("%d\n" % srv.getsockname()[1])
    sys.stdout.flush()
    try:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=handle, args=(conn, mode), daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        srv.close()


if __name__ == "__main__":
    main()
