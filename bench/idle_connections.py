#!/usr/bin/env python3
"""RSS per idle HTTP/2 connection: opens N connections to each server, completes the
HTTP/2 preface and SETTINGS exchange on each, and reads the server's VmRSS before and after.

    idle_connections.py N NAME:PID:PORT [NAME:PID:PORT ...]
"""
import socket
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def measure(n, name, pid, port):
    before = rss_kib(pid)
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(PREFACE + SETTINGS_ACK)
        conns.append(s)
    for s in conns:  # the server's SETTINGS arrived: the connection is fully set up
        s.settimeout(5)
        s.recv(4096)
    time.sleep(2)
    after = rss_kib(pid)
    for s in conns:
        s.close()
    per = (after - before) * 1024 / n
    print(f"{name:10s} {n} idle h2 connections: RSS {before} KiB -> {after} KiB, {per / 1024:.1f} KiB per connection")
    time.sleep(2)
    return per


def main():
    n = int(sys.argv[1])
    results = {}
    for spec in sys.argv[2:]:
        name, pid, port = spec.split(":")
        results[name] = measure(n, name, int(pid), int(port))
    names = list(results)
    if len(names) == 2 and results[names[1]] > 0:
        print(f"ratio {names[0]}/{names[1]}: {results[names[0]] / results[names[1]]:.2f}")


if __name__ == "__main__":
    main()
