"""Plays kube-proxy for the e2e harness: 127.0.0.1:<listen> -> 127.0.0.1:<target>.

The chart's Service maps port 443 to shell-operator's 9680, and shell-operator registers its
webhook with a Service reference and no port, so the API server dials 443. Run as root, this
forwarder lets shell-operator itself keep an unprivileged port. Usage: forwarder.py LISTEN TARGET
"""

import selectors
import socket
import sys
import threading


def pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (sink, source):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def handle(client: socket.socket, target: int) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", target), timeout=5)
    except OSError as exc:
        print(f"cannot reach 127.0.0.1:{target}: {exc}", flush=True)
        client.close()
        return
    upstream.settimeout(None)
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
    pipe(client, upstream)


def main() -> int:
    listen, target = int(sys.argv[1]), int(sys.argv[2])
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("127.0.0.1", listen))
    except OSError as exc:
        print(f"cannot listen on 127.0.0.1:{listen}: {exc}", flush=True)
        return 1
    server.listen(128)
    print(f"listening on 127.0.0.1:{listen}, forwarding to 127.0.0.1:{target}", flush=True)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    while True:
        selector.select()
        client, _ = server.accept()
        threading.Thread(target=handle, args=(client, target), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
