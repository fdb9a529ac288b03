#!/usr/bin/env python3
"""A stand-in for the central platform's batch receiver (the platform is a Django service that
does not exist as software here), for gkgw's black-box tests.

  receiver.py --port P --schema docs/schema/batch.schema.json [--token T] [--mqtt-port M]
              [--no-validate] [--tls-port P2 --tls-cert CERT --tls-key KEY]

POST /batches: checks the bearer token (401), that the body is JSON valid against the schema
(422, counted as invalid) and that the Idempotency-Key header equals the body's key (422);
de-duplicates by that key (a duplicate must have the very same body, else it is counted as a
conflict) and answers 200 {"accepted": true, "duplicate": bool, "commands": [...]}.

POST /control {"mode": "ok"|"500"|"429"|"hang"|"close"|"down"|"slow", "count": N (-1: until
changed), "retry_after": S, "hang_s": S, "script": [modes...], "commands": [...]} makes the next
N requests misbehave: 500, 429 with Retry-After, hang past the client's timeout, close the
connection mid-request without answering, refuse (down: 503 without Retry-After), or answer
normally after hang_s (slow). A script's modes are served first, one per request, in order.
Queued commands ride on the next 200. /stats "served" lists [mode, arrival time] per request.

GET /stats: {"requests", "accepted", "duplicates", "conflicts", "invalid", "unauthorized",
"modes_served": {...}, "seqs": [...] in arrival order of first receipt};
GET /batches: every accepted batch, in arrival order.
Prints READY once serving.
"""
import argparse, json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema

lock = threading.Lock()
state = {
    "mode": "ok", "count": 0, "retry_after": 1, "hang_s": 5.0, "commands": [],
    "requests": 0, "accepted": 0, "duplicates": 0, "conflicts": 0, "invalid": 0,
    "unauthorized": 0, "modes_served": {}, "seqs": [], "errors": [],
    "script": [], "served": [],
}
batches = {}   # key -> body bytes
order = []     # keys in order of first receipt


def take_mode():
    with lock:
        if state["script"]:
            m = state["script"].pop(0)
            state["modes_served"][m] = state["modes_served"].get(m, 0) + 1
            state["served"].append([m, time.time()])
            return m, state["retry_after"], state["hang_s"]
        m = state["mode"]
        state["served"].append([m, time.time()])
        if m != "ok" and state["count"] != -1:
            state["count"] -= 1
            if state["count"] <= 0:
                state["mode"] = "ok"
        state["modes_served"][m] = state["modes_served"].get(m, 0) + 1
        return m, state["retry_after"], state["hang_s"]


def accept(raw, header_key):
    """Validates and de-duplicates one batch; returns (error, duplicate, commands)."""
    try:
        body = json.loads(raw)
        if validator is not None:
            validator.validate(body)
    except (ValueError, jsonschema.ValidationError) as e:
        with lock:
            state["invalid"] += 1
            state["errors"].append(str(e)[:500])
        return str(e)[:500], False, []
    key = body["idempotency_key"]
    if header_key is not None and header_key != key:
        with lock:
            state["invalid"] += 1
            state["errors"].append(f"header key {header_key!r} != body key {key!r}")
        return "Idempotency-Key header differs from the body", False, []
    with lock:
        dup = key in batches
        if dup:
            state["duplicates"] += 1
            if batches[key] != raw:
                state["conflicts"] += 1
        else:
            batches[key] = raw
            order.append(key)
            state["accepted"] += 1
            state["seqs"].append(body["seq"])
            now = time.time()
            state.setdefault("first_accepted_at", now)
            state["last_accepted_at"] = now
        commands, state["commands"] = state["commands"], []
    return None, dup, commands


def mqtt_receiver(port):
    """Subscribes to gkgw/+/+/batch with a persistent session (QoS 1)."""
    import paho.mqtt.client as mqtt
    ready = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="platform", clean_session=False)
    def on_connect(cl, u, flags, rc, props=None):
        cl.subscribe("gkgw/+/+/batch", qos=1)
    def on_subscribe(cl, u, mid, rcs, props=None):
        ready.set()
    def on_message(cl, u, m):
        with lock:
            state["requests"] += 1
        accept(m.payload, None)
    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    c.reconnect_delay_set(min_delay=1, max_delay=2)
    c.connect("127.0.0.1", port, keepalive=10)
    c.loop_start()
    if not ready.wait(10):
        sys.exit("no SUBACK from the broker")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, obj, headers=()):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        n = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(n)

    def do_GET(self):
        with lock:
            if self.path == "/stats":
                return self.reply(200, {k: v for k, v in state.items() if k not in ("commands",)})
            if self.path == "/batches":
                return self.reply(200, [json.loads(batches[k]) for k in order])
        self.reply(404, {"error": "no such path"})

    def do_POST(self):
        if self.path == "/control":
            c = json.loads(self.read_body() or b"{}")
            with lock:
                for k in ("mode", "count", "retry_after", "hang_s", "script"):
                    if k in c:
                        state[k] = c[k]
                state["commands"].extend(c.get("commands", []))
            return self.reply(200, {"ok": True})
        if self.path.startswith("/api/v2/write") or self.path.startswith("/write"):
            # An InfluxDB stand-in for measurements: counts the raw line protocol, keeps nothing.
            raw = self.read_body()
            if self.headers.get("Content-Encoding") == "gzip":
                import gzip
                raw = gzip.decompress(raw)
            with lock:
                state["line_protocol_bytes"] = state.get("line_protocol_bytes", 0) + len(raw)
                state["line_protocol_lines"] = state.get("line_protocol_lines", 0) + raw.count(b"\n")
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path != "/batches":
            return self.reply(404, {"error": "no such path"})
        with lock:
            state["requests"] += 1
        mode, retry_after, hang_s = take_mode()
        if mode == "close":
            # Read part of the request, then drop the connection without an answer.
            self.rfile.read(10)
            self.close_connection = True
            self.connection.shutdown(2)
            return
        raw = self.read_body()
        if self.headers.get("Content-Encoding") == "gzip":
            import gzip
            with lock:
                state["gzipped"] = state.get("gzipped", 0) + 1
                state["wire_bytes"] = state.get("wire_bytes", 0) + len(raw)
            raw = gzip.decompress(raw)
        else:
            with lock:
                state["wire_bytes"] = state.get("wire_bytes", 0) + len(raw)
        with lock:
            state["json_bytes"] = state.get("json_bytes", 0) + len(raw)
        if mode == "hang":
            time.sleep(hang_s)
            return self.reply(500, {"error": "hung"})
        if mode == "500":
            return self.reply(500, {"error": "internal error (simulated)"})
        if mode == "429":
            return self.reply(429, {"error": "slow down"}, [("Retry-After", str(retry_after))])
        if mode == "slow":
            time.sleep(hang_s)
        if mode == "down":
            return self.reply(503, {"error": "down for maintenance"})
        if args.token and self.headers.get("Authorization") != f"Bearer {args.token}":
            with lock:
                state["unauthorized"] += 1
            return self.reply(401, {"error": "bad token"})
        err, dup, commands = accept(raw, self.headers.get("Idempotency-Key"))
        if err:
            return self.reply(422, {"error": err})
        self.reply(200, {"accepted": True, "duplicate": dup, "commands": commands})


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--token")
    ap.add_argument("--mqtt-port", type=int, help="also take batches from this MQTT broker")
    ap.add_argument("--tls-port", type=int,
                    help="also serve HTTPS here (the same routes; --port stays plain HTTP)")
    ap.add_argument("--tls-cert", help="the HTTPS certificate (PEM, chain)")
    ap.add_argument("--tls-key", help="and its private key (PEM)")
    ap.add_argument("--no-validate", action="store_true",
                    help="parse and de-duplicate only (the fleet benchmark's fast receiver)")
    args = ap.parse_args()
    schema = json.load(open(args.schema))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = None if args.no_validate else jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.FormatChecker())
    if args.mqtt_port:
        mqtt_receiver(args.mqtt_port)
    ThreadingHTTPServer.request_queue_size = 1024  # hundreds of gateways connect at once
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    if args.tls_port:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        tls = ThreadingHTTPServer(("127.0.0.1", args.tls_port), Handler)
        tls.daemon_threads = True
        # The handshake happens in the handler's thread (a bad client never blocks accept).
        tls.socket = ctx.wrap_socket(tls.socket, server_side=True, do_handshake_on_connect=False)
        threading.Thread(target=tls.serve_forever, daemon=True).start()
    srv.daemon_threads = True
    print("READY", flush=True)
    srv.serve_forever()
