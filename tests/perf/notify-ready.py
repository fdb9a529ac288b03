#!/usr/bin/env python3
"""Plays systemd's part for a Type=notify service, to time it: runs COMMAND with NOTIFY_SOCKET
(and WATCHDOG_USEC) set, and prints one JSON line with the seconds from the start to READY=1,
to the first WATCHDOG=1, and, after SIGTERM, to STOPPING=1 and to the exit.

    tests/perf/notify-ready.py [--watchdog-s 30] [--run-s 20] -- COMMAND...

Used by docs/PERFORMANCE.md ("Raspberry Pi build") with the aarch64 binary under qemu.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--watchdog-s", type=float, default=30.0)
    ap.add_argument("--run-s", type=float, default=20.0, help="time to run after READY")
    ap.add_argument("--timeout-s", type=float, default=120.0)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("no command")

    d = tempfile.mkdtemp(prefix="notify-")
    path = os.path.join(d, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC=str(int(a.watchdog_s * 1e6)))
    env.pop("WATCHDOG_PID", None)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    got = {}
    watchdogs = 0
    stop_sent = None

    def at():
        return round(time.monotonic() - t0, 3)

    sock.settimeout(0.2)
    while True:
        if proc.poll() is not None:
            got["exit"] = at()
            break
        now = time.monotonic() - t0
        if now > a.timeout_s and stop_sent is None:
            got["timeout"] = True
            proc.send_signal(signal.SIGTERM)
            stop_sent = at()
        if "ready" in got and stop_sent is None and now > got["ready"] + a.run_s:
            proc.send_signal(signal.SIGTERM)
            stop_sent = at()
        try:
            msg = sock.recv(4096).decode(errors="replace")
        except socket.timeout:
            continue
        for line in msg.split("\n"):
            if line == "READY=1":
                got.setdefault("ready", at())
            elif line == "WATCHDOG=1":
                watchdogs += 1
                got.setdefault("first_watchdog", at())
            elif line == "STOPPING=1":
                got.setdefault("stopping", at())
    result = {
        "ready_s": got.get("ready"),
        "first_watchdog_s": got.get("first_watchdog"),
        "watchdogs": watchdogs,
        "sigterm_at_s": stop_sent,
        "stopping_s": got.get("stopping"),
        "exit_s": got.get("exit"),
        "shutdown_s": round(got["exit"] - stop_sent, 3) if stop_sent and "exit" in got else None,
        "exit_code": proc.returncode,
        "timed_out": got.get("timeout", False),
    }
    print(json.dumps(result))
    os.unlink(path)
    os.rmdir(d)
    return 0 if result["ready_s"] is not None and proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
