#!/usr/bin/env python3
"""Port counters of a running DPDK process over its telemetry socket, twice.

Usage: ethdev-stats.py SOCKET SECONDS PORT [PORT...]

Reads /ethdev/stats for every PORT, sleeps SECONDS, reads them again and
prints one JSON object: {"seconds": measured interval, "ports": {port: {counter:
delta}}}. The telemetry socket is SOCK_SEQPACKET, which Node cannot open; the
fast-path bench uses this to measure l3fwd, which prints no rates itself.
Exit status 1 with a message on stderr when the socket does not answer.
"""
import json
import socket
import sys
import time


def query(sock, max_len, cmd):
    sock.send(cmd.encode())
    reply = json.loads(sock.recv(max_len).decode())
    key = cmd.split(',', 1)[0]
    if key not in reply or not isinstance(reply[key], dict):
        raise RuntimeError(f'{cmd}: unexpected answer {reply!r}')
    return reply[key]


def sample(sock, max_len, ports):
    t = time.monotonic()
    stats = {p: query(sock, max_len, f'/ethdev/stats,{p}') for p in ports}
    return t, stats


def main():
    if len(sys.argv) < 4:
        sys.exit('usage: ethdev-stats.py SOCKET SECONDS PORT [PORT...]')
    path, seconds, ports = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.connect(path)
        hello = json.loads(sock.recv(1024).decode())
        max_len = int(hello.get('max_output_len', 16384))
        t0, s0 = sample(sock, max_len, ports)
        time.sleep(seconds)
        t1, s1 = sample(sock, max_len, ports)
    except (OSError, ValueError, RuntimeError) as e:
        sys.exit(f'ethdev-stats: {path}: {e}')
    delta = {
        p: {k: v - s0[p][k] for k, v in s1[p].items() if isinstance(v, int) and isinstance(s0[p].get(k), int)}
        for p in ports
    }
    print(json.dumps({'seconds': t1 - t0, 'ports': delta}))


if __name__ == '__main__':
    main()
