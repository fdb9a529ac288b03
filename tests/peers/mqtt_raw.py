#!/usr/bin/env python3
"""A raw MQTT 3.1.1 client for gkgw's broker tests: it sends exactly the bytes a test needs
(a second CONNECT, keep-alive 0, a forged user name, a login flood, half-open connections),
which a well-behaved client library will not. Prints one JSON line with what happened.

  mqtt_raw.py --port P connect [--user U] [--password PW] [--client-id C] [--keepalive K]
                               [--will-topic T] [--hold S]
  mqtt_raw.py --port P second-connect --user U --password PW
  mqtt_raw.py --port P subscribe --user U --password PW --filter F [--filter F2 ...]
  mqtt_raw.py --port P publish --user U --password PW --topic T --payload P [--qos 1]
  mqtt_raw.py --port P login-flood --user U --connections 100 --attempts 10
  mqtt_raw.py --port P hold --connections N --seconds S
"""
import argparse, json, socket, struct, sys, threading, time


def enc_len(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack("!H", len(b)) + b


def packet(first, body):
    return bytes([first]) + enc_len(len(body)) + body


def connect_pkt(client_id, user=None, password=None, keepalive=60, will_topic=None):
    flags = 0x02
    payload = s(client_id)
    if will_topic:
        flags |= 0x04
        payload += s(will_topic) + s(b'{"event":"gone"}')
    if user is not None:
        flags |= 0x80
        payload += s(user)
    if password is not None:
        flags |= 0x40
        payload += s(password)
    return packet(0x10, s("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload)


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_packet(sock):
    """(type byte, body) or None when the server closed the connection."""
    h = recv_exact(sock, 1)
    if h is None:
        return None
    mult, length = 1, 0
    while True:
        b = recv_exact(sock, 1)
        if b is None:
            return None
        length += (b[0] & 0x7F) * mult
        mult *= 128
        if not b[0] & 0x80:
            break
    body = recv_exact(sock, length) if length else b""
    if body is None:
        return None
    return h[0], body


def closed(sock, timeout=3.0):
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


def login(a, client_id=None, user=None, password=None, keepalive=60, will_topic=None):
    sock = socket.create_connection((a.host, a.port), timeout=10)
    sock.sendall(connect_pkt(client_id if client_id is not None else (user or "probe"),
                             user, password, keepalive, will_topic))
    p = read_packet(sock)
    rc = None if p is None else p[1][1]
    return sock, rc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ["connect", "second-connect", "subscribe", "publish", "login-flood"]:
        p = sub.add_parser(name)
        p.add_argument("--user")
        p.add_argument("--password")
        p.add_argument("--client-id")
        p.add_argument("--keepalive", type=int, default=60)
        p.add_argument("--will-topic")
        p.add_argument("--hold", type=float, default=0)
        p.add_argument("--filter", action="append", default=[])
        p.add_argument("--topic")
        p.add_argument("--payload", default="")
        p.add_argument("--qos", type=int, default=1)
        p.add_argument("--connections", type=int, default=100)
        p.add_argument("--attempts", type=int, default=10)
    h = sub.add_parser("hold")
    h.add_argument("--connections", type=int, default=100)
    h.add_argument("--seconds", type=float, default=5)
    a = ap.parse_args()

    if a.cmd == "connect":
        sock, rc = login(a, a.client_id, a.user, a.password, a.keepalive, a.will_topic)
        out = {"rc": rc}
        if rc == 0 and a.hold:
            time.sleep(a.hold)
            sock.sendall(bytes([0xC0, 0]))  # PINGREQ after a silence longer than any timeout
            sock.settimeout(5)
            p = read_packet(sock)
            out["alive"] = p is not None and p[0] == 0xD0
        print(json.dumps(out))
    elif a.cmd == "second-connect":
        sock, rc = login(a, a.client_id, a.user, a.password)
        sock.sendall(connect_pkt(a.client_id or a.user, a.user, a.password))
        print(json.dumps({"rc": rc, "closed": closed(sock)}))
    elif a.cmd == "subscribe":
        sock, rc = login(a, a.client_id, a.user, a.password)
        body = struct.pack("!H", 7) + b"".join(s(f) + bytes([1]) for f in a.filter)
        sock.sendall(packet(0x82, body))
        p = read_packet(sock)
        print(json.dumps({"rc": rc, "codes": list(p[1][2:]) if p else None}))
    elif a.cmd == "publish":
        sock, rc = login(a, a.client_id, a.user, a.password)
        body = s(a.topic) + (struct.pack("!H", 9) if a.qos else b"") + a.payload.encode()
        sock.sendall(packet(0x30 | (a.qos << 1), body))
        sock.settimeout(5)
        try:
            p = read_packet(sock)
        except socket.timeout:
            p = "timeout"
        print(json.dumps({"rc": rc, "puback": isinstance(p, tuple) and p[0] == 0x40,
                          "closed": p is None}))
    elif a.cmd == "login-flood":
        codes, lock = {}, threading.Lock()

        def worker(i):
            for j in range(a.attempts):
                try:
                    sock, rc = login(a, a.user, a.user, f"wrong-{i}-{j}")
                    sock.close()
                except OSError:
                    rc = "error"
                with lock:
                    codes[str(rc)] = codes.get(str(rc), 0) + 1

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(a.connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(json.dumps({"codes": codes}))
    elif a.cmd == "hold":
        socks, failed = [], 0
        for _ in range(a.connections):
            try:
                socks.append(socket.create_connection((a.host, a.port), timeout=2))
            except OSError:
                failed += 1
        time.sleep(a.seconds)
        gone = sum(1 for x in socks if closed(x, 0.05))
        print(json.dumps({"opened": len(socks), "failed": failed, "closed_by_server": gone}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
