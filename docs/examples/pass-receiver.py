#!/usr/bin/env python3
"""A server that takes its connections from the Handoff host agent.

With `app: { kind: unix, path: /run/app.sock }` in the host's config, the
agent passes each injected connection's descriptor over that UNIX socket
(SCM_RIGHTS), with one JSON line naming the flow. The request the balancer
already read is in the socket's receive queue, so the server reads it as if
it had accepted the connection itself, and answers the client directly.

    python3 pass-receiver.py /run/app.sock [name]
"""
import json
import os
import socket
import sys
import threading


def serve(conn: socket.socket, flow: dict, name: str) -> None:
    with conn:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
        path = head.split(b" ", 2)[1].decode("latin-1") if head.count(b" ") >= 2 else "?"
        body = f"served by python on {name}: {path} (flow {flow.get('flowId')}, client {flow.get('client')})\n".encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n"
                     + f"content-length: {len(body)}\r\n\r\n".encode() + body)


def main() -> None:
    path = sys.argv[1]
    name = sys.argv[2] if len(sys.argv) > 2 else socket.gethostname()
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(128)
    print(f"listening on {path}", flush=True)
    while True:
        agent, _ = listener.accept()
        with agent:
            msg, fds, _flags, _addr = socket.recv_fds(agent, 4096, 1)
        if not fds:
            continue
        flow = json.loads(msg.decode() or "{}")
        conn = socket.socket(fileno=fds[0])  # family and type come from the descriptor
        threading.Thread(target=serve, args=(conn, flow, name), daemon=True).start()


if __name__ == "__main__":
    main()
