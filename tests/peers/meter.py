#!/usr/bin/env python3
"""An independent field-meter client (paho-mqtt) for gkgw's black-box tests.

Publishes gas-meter state messages for one or more meters and records every application ack
(`meters/{id}/ack`, {"seq": N}) it receives, one "meter_id seq" line per ack, flushed at once,
so a test can kill the gateway at any moment and still know which readings were acknowledged.

  meter.py --port P --meters GM-1 --count 100 [--qos 1] [--user U --password PW]
           [--rate 50] [--acks-file F] [--wait-acks 10] [--ts-base EPOCH_S] [--continuous]
           [--keepalive S] [--client-id ID] [--clean-session 0|1]

The client id is the first meter's id (the gateway requires a meter's client id to be its id)
unless --client-id says otherwise.

--continuous keeps publishing (seq grows) and reconnecting until SIGTERM; otherwise it publishes
--count messages per meter, waits up to --wait-acks seconds for the acks and exits 0 if all came.
"""
import argparse, json, signal, sys, time, threading
import paho.mqtt.client as mqtt

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--meters", required=True)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--qos", type=int, default=1)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--rate", type=float, default=0.0, help="messages per second per meter; 0 = no pause")
    ap.add_argument("--acks-file")
    ap.add_argument("--pubacks-file", help="one 'meter seq' line per PUBACK received (QoS 1)")
    ap.add_argument("--wait-acks", type=float, default=10.0)
    ap.add_argument("--ts-base", type=float, default=0.0, help="if set, ts = base + seq × ts-step seconds (RFC 3339)")
    ap.add_argument("--ts-step", type=float, default=1.0)
    ap.add_argument("--start-seq", type=int, default=1)
    ap.add_argument("--continuous", action="store_true")
    ap.add_argument("--keepalive", type=int, default=10)
    ap.add_argument("--client-id")
    ap.add_argument("--clean-session", type=int, default=1)
    a = ap.parse_args()

    meters = a.meters.split(",")
    acks = {m: set() for m in meters}
    lock = threading.Lock()
    out = open(a.acks_file, "a", buffering=1) if a.acks_file else None
    pubacks = open(a.pubacks_file, "a", buffering=1) if a.pubacks_file else None
    # mid -> (meter, seq) of QoS 1 publishes; a PUBACK can arrive before publish() returns,
    # so either side may come first. Our lock is never held while calling into paho.
    by_mid, early = {}, set()

    def puback(meter, seq):
        if pubacks:
            pubacks.write(f"{meter} {seq}\n")

    def on_publish(c, userdata, mid, rc=None, props=None):
        with lock:
            hit = by_mid.pop(mid, None)
            if hit is None:
                early.add(mid)
        if hit:
            puback(*hit)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    connected = threading.Event()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=a.client_id or meters[0],
                         clean_session=bool(a.clean_session))
    if a.user:
        client.username_pw_set(a.user, a.password)
    client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)

    def on_connect(c, userdata, flags, rc, props=None):
        if rc == 0:
            for m in meters:
                c.subscribe(f"meters/{m}/ack", qos=1)
            connected.set()
        else:
            print(f"connect refused: {rc}", file=sys.stderr)

    def on_disconnect(c, userdata, flags, rc, props=None):
        connected.clear()

    def on_message(c, userdata, msg):
        meter = msg.topic.split("/")[1]
        seq = json.loads(msg.payload)["seq"]
        with lock:
            acks.setdefault(meter, set()).add(seq)
        if out:
            out.write(f"{meter} {seq}\n")

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_message = on_message
    client.on_publish = on_publish
    try:
        client.connect(a.host, a.port, keepalive=a.keepalive)
    except OSError as e:
        print(f"cannot connect: {e}", file=sys.stderr)
        return 3
    client.loop_start()
    if not connected.wait(10):
        print("not connected after 10 s", file=sys.stderr)
        return 3

    def payload(meter, seq):
        p = {"meter_id": meter, "seq": seq, "kind": "gas", "cum_kg": round(seq * 0.01, 3),
             "credit_kg": 5.0, "valve": "open", "battery_v": 3.8, "rssi": -70, "tamper": False}
        if a.ts_base:
            t = a.ts_base + seq * a.ts_step
            p["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int(round((t % 1) * 1000))
        return json.dumps(p)

    seq = a.start_seq
    published = 0
    while not stop.is_set() and (a.continuous or seq < a.start_seq + a.count):
        if not connected.is_set():
            time.sleep(0.05)
            continue
        for m in meters:
            info = client.publish(f"meters/{m}/state", payload(m, seq), qos=a.qos)
            if a.qos:
                with lock:
                    done = info.mid in early
                    early.discard(info.mid)
                    if not done:
                        by_mid[info.mid] = (m, seq)
                if done:
                    puback(m, seq)
            published += 1
        seq += 1
        if a.rate:
            time.sleep(1.0 / a.rate)

    total_expected = (seq - a.start_seq) * len(meters)
    deadline = time.time() + a.wait_acks
    while time.time() < deadline and not stop.is_set():
        with lock:
            got = sum(len(s) for s in acks.values())
        if got >= total_expected:
            break
        time.sleep(0.05)
    client.loop_stop()
    client.disconnect()
    with lock:
        got = sum(len(s) for s in acks.values())
    print(json.dumps({"published": published, "acked": got, "last_seq": seq - 1}))
    return 0 if a.continuous or got >= total_expected else 1

if __name__ == "__main__":
    sys.exit(main())
