#!/usr/bin/env python3
"""The central platform's side of gkgw's signed commands, for the black-box tests, written
with Python's `cryptography` (an implementation independent of the gateway's ed25519-dalek).

  command_peer.py keygen DIR                 writes DIR/platform.pem (PKCS#8) and DIR/platform.pub.pem (SPKI)
  command_peer.py sign KEY.pem PAYLOAD_JSON [--header JSON] [--raw]
      prints the compact JWS of PAYLOAD_JSON with header {"alg":"EdDSA"} (or --header);
      with --raw the payload is signed as the given bytes, not re-serialised

Also a meter that takes commands:

  command_peer.py meter --port P --user ID --password PW --log FILE [--reject]
      subscribes to meters/ID/cmd, appends every command it receives to FILE (one JSON line,
      flushed), answers meters/ID/cmd/ack {"id","result":"applied"|"rejected","detail","credit"};
      runs until SIGTERM
"""
import base64, json, signal, sys, time


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def keygen(d):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives import serialization as s
    k = Ed25519PrivateKey.generate()
    open(f"{d}/platform.pem", "wb").write(
        k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))
    open(f"{d}/platform.pub.pem", "wb").write(
        k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))


def sign(key_path, payload, header, raw):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    k = load_pem_private_key(open(key_path, "rb").read(), password=None)
    body = payload.encode() if raw else json.dumps(json.loads(payload), separators=(",", ":")).encode()
    h = b64(json.dumps(json.loads(header), separators=(",", ":")).encode())
    signing_input = f"{h}.{b64(body)}"
    print(f"{signing_input}.{b64(k.sign(signing_input.encode()))}")


def meter(a):
    import paho.mqtt.client as mqtt
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    credit = [1.0]
    seen = {}
    log = open(a.log, "a")
    topic = f"meters/{a.user}/cmd"
    try:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=a.user)
    except AttributeError:
        c = mqtt.Client(client_id=a.user)
    c.username_pw_set(a.user, a.password)

    def on_connect(client, *_):
        client.subscribe(topic, qos=1)

    def on_subscribe(*_):
        log.write(json.dumps({"subscribed": True}) + "\n")
        log.flush()

    def on_message(client, _u, m):
        cmd = json.loads(m.payload)
        log.write(json.dumps(cmd) + "\n")
        log.flush()
        if cmd["id"] not in seen:
            if a.reject:
                seen[cmd["id"]] = {"id": cmd["id"], "result": "rejected", "detail": "test meter says no"}
            else:
                credit[0] += float(cmd.get("args", {}).get("amount", 0))
                seen[cmd["id"]] = {"id": cmd["id"], "result": "applied", "detail": "ok", "credit": credit[0]}
        client.publish(f"{topic}/ack", json.dumps(seen[cmd["id"]]), qos=1)

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.connect(a.host, a.port, keepalive=10)
    c.loop_start()
    while not stop:
        time.sleep(0.05)
    c.loop_stop()
    c.disconnect()


def main():
    import argparse
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen")
    k.add_argument("dir")
    s = sub.add_parser("sign")
    s.add_argument("key")
    s.add_argument("payload")
    s.add_argument("--header", default='{"alg":"EdDSA"}')
    s.add_argument("--raw", action="store_true")
    m = sub.add_parser("meter")
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, required=True)
    m.add_argument("--user", required=True)
    m.add_argument("--password", required=True)
    m.add_argument("--log", required=True)
    m.add_argument("--reject", action="store_true")
    a = ap.parse_args()
    if a.cmd == "keygen":
        keygen(a.dir)
    elif a.cmd == "sign":
        sign(a.key, a.payload, a.header, a.raw)
    else:
        meter(a)


if __name__ == "__main__":
    main()
