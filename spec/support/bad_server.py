#!/usr/bin/python3
"""A misbehaving HTTP server for "server closes mid-body" specs.

Listens on 127.0.0.1 (ephemeral port unless given as argv[1]), prints the
port on stdout (one line, flushed), and answers every request with a 200
whose headers announce Content-Length: 100000, then sends 1000 bytes and
closes the connection. Runs until killed (SIGTERM/SIGINT).
"""
import signal
import socket
import sys
import threading

ANNOUNCED = 100000
SENT = 1000


def handle(conn):
    try:
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        head = (
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: application/octet-stream\r\n"
            "Content-Length: %d\r\n"
            "Connection: keep-alive\r\n"
            "\r\n" % ANNOUNCED
        ).encode()
        conn.sendall(head + b"x" * SENT)
    except OSError:
        pass
    finally:
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.close()


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    sys.stdout.write("%d\n" % srv.getsockname()[1])
    sys.stdout.flush()
    try:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        srv.close()


if __name__ == "__main__":
    main()
