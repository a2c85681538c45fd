#!/usr/bin/env python3
"""Process start -> first `GET /ready` 200, in ms: starts CMD (env from the caller), polls /ready
every millisecond over a raw socket (no process spawn per poll), prints the milliseconds, stops CMD.
Usage: start_ready.py PORT CMD [ARGS...]"""
import socket
import subprocess
import sys
import time

port, cmd = int(sys.argv[1]), sys.argv[2:]
t0 = time.monotonic()
p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
ok = False
try:
    while time.monotonic() - t0 < 20:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(32).startswith(b"HTTP/1.1 200"):
                    ok = True
                    break
        except OSError:
            pass
        time.sleep(0.001)
    elapsed = (time.monotonic() - t0) * 1000
finally:
    p.terminate()
    p.wait()
if not ok:
    sys.exit("never ready")
print(round(elapsed))
