#!/usr/bin/env python3
"""Self-check of modbus_device.py against an independent peer: pymodbus's client.

  python3 tests/peers/modbus_selfcheck.py [-v] [--only tcp,rtu,rtu-tcp]

Starts the device over Modbus TCP, over RTU on a socat pty pair (device on one end, client on
the other) and over RTU-over-TCP, and checks: every type x byte order decodes back (decoded
here independently of the device's encoder, plus hand-written known-answer vectors and
pymodbus's own converter where it applies), raw tables, writes, the exceptions (max_read,
holes, address past 9999, unknown function), an absent unit and a silent unit (timeouts) next
to a healthy one on the same bus, late_once (latency, and the late frame really arriving later
on the wire), a bad CRC dropped silently, a client reopening the pty, and socat being restarted
under the device. Needs socat, pymodbus and pyserial (tests/peers/install.sh).
Developer tool, not part of CI; exit 0 when everything passed. Takes ~15 s.
"""
import argparse
import asyncio
import functools
import inspect
import json
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import serial
from pymodbus import FramerType
from pymodbus.client import AsyncModbusTcpClient, ModbusSerialClient
from pymodbus.exceptions import ModbusException

HERE = os.path.dirname(os.path.abspath(__file__))
DEVICE = os.path.join(HERE, "modbus_device.py")
VERBOSE = False
PASSED, FAILED = [], []
P = functools.partial   # calls are made lazily, inside call()


def check(name, ok, detail=""):
    (PASSED if ok else FAILED).append(name)
    if VERBOSE or not ok:
        print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else '  ' + str(detail)}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def crc16(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return bytes([crc & 0xFF, crc >> 8])


# --- independent decoding ------------------------------------------------------------------------
# Written as a byte permutation (where does big-endian byte k sit on the wire?) rather than as
# the device's "reverse registers / swap bytes" steps, so the two are not the same code twice.

NUM_FMT = {"u16": "H", "i16": "h", "u32": "I", "i32": "i", "u64": "Q", "i64": "q",
           "f32": "f", "f64": "d", "bool": "H"}
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")


def wire_index(order, k, n, is_string):
    """Position on the wire (0 = high byte of the first register) of big-endian byte k of n."""
    if is_string:
        return k ^ 1 if order in ("BADC", "DCBA") else k
    return {"ABCD": k,
            "DCBA": n - 1 - k,                           # fully little-endian
            "BADC": k ^ 1,                               # bytes swapped in each register
            "CDAB": (n // 2 - 1 - k // 2) * 2 + k % 2,   # registers reversed
            }[order]


def decode(typ, order, regs):
    wire = b"".join(struct.pack(">H", r) for r in regs)
    n = len(wire)
    be = bytes(wire[wire_index(order, k, n, typ == "string")] for k in range(n))
    if typ == "string":
        return be.rstrip(b"\0").decode("ascii")
    v = struct.unpack(">" + NUM_FMT[typ], be)[0]
    return bool(v) if typ == "bool" else v


def nregs(typ, count=None):
    return count if typ == "string" else max(1, struct.calcsize(NUM_FMT[typ]) // 2)


# One sample per type, all exactly representable (floats compare with ==).
SAMPLES = {"u16": 0xBEEF, "i16": -12345, "u32": 0xDEADBEEF, "i32": -123456789,
           "u64": 0x0123456789ABCDEF, "i64": -1234567890123456789, "f32": -0.15625,
           "f64": 3.141592653589793, "bool": True, "string": "SN-42"}

# Hand-computed wire registers: (type, order, value, count, expected registers).
KNOWN = [
    ("u32", "ABCD", 0x12345678, None, [0x1234, 0x5678]),
    ("u32", "CDAB", 0x12345678, None, [0x5678, 0x1234]),
    ("u32", "BADC", 0x12345678, None, [0x3412, 0x7856]),
    ("u32", "DCBA", 0x12345678, None, [0x7856, 0x3412]),
    ("f32", "ABCD", 12.5, None, [0x4148, 0x0000]),
    ("f32", "CDAB", 12.5, None, [0x0000, 0x4148]),
    ("f32", "BADC", 12.5, None, [0x4841, 0x0000]),
    ("f32", "DCBA", 12.5, None, [0x0000, 0x4841]),
    ("u64", "CDAB", 0x0102030405060708, None, [0x0708, 0x0506, 0x0304, 0x0102]),
    ("u64", "BADC", 0x0102030405060708, None, [0x0201, 0x0403, 0x0605, 0x0807]),
    ("u64", "DCBA", 0x0102030405060708, None, [0x0807, 0x0605, 0x0403, 0x0201]),
    ("i16", "ABCD", -2, None, [0xFFFE]),
    ("i16", "BADC", -2, None, [0xFEFF]),
    ("u16", "CDAB", 0x1234, None, [0x1234]),
    ("u16", "DCBA", 0x1234, None, [0x3412]),
    ("bool", "ABCD", True, None, [0x0001]),
    ("bool", "BADC", True, None, [0x0100]),
    ("string", "ABCD", "SN-42", 4, [0x534E, 0x2D34, 0x3200, 0x0000]),
    ("string", "CDAB", "SN-42", 4, [0x534E, 0x2D34, 0x3200, 0x0000]),
    ("string", "BADC", "SN-42", 4, [0x4E53, 0x342D, 0x0032, 0x0000]),
    ("string", "DCBA", "SN-42", 4, [0x4E53, 0x342D, 0x0032, 0x0000]),
]


def make_spec():
    """Unit 1: healthy, with every value; 2: silent; 3, 4: late_once; 5: healthy, plain."""
    values = []   # (table, address, type, order, value, count)
    addr = {"holding": 1000, "input": 1000}
    i = 0
    for typ, sample in SAMPLES.items():
        for order in ORDERS:
            table = ("holding", "input")[i % 2]
            i += 1
            count = 4 if typ == "string" else None
            values.append((table, addr[table], typ, order, sample, count))
            addr[table] += nregs(typ, count)
    known_at = []
    a = 2000
    for typ, order, value, count, regs in KNOWN:
        values.append(("holding", a, typ, order, value, count))
        known_at.append((a, typ, order, regs))
        a += len(regs)
    unit1 = {
        "holding": {"0": 4660, "1": 22136},
        "input": {"0": 1},
        "coils": {"0": True, "5": True},
        "discrete": {"3": True},
        "values": [dict(table=t, address=ad, type=ty, order=o, value=v,
                        **({"count": c} if c else {})) for t, ad, ty, o, v, c in values],
        "max_read": 10,
        "holes": [[100, 109]],
        "mode": "normal",
    }
    spec = {"units": {
        "1": unit1,
        "2": {"holding": {"0": 2}, "mode": "silent"},
        "3": {"holding": {"0": 3}, "mode": "late_once", "late_ms": 1500},
        "4": {"holding": {"0": 4}, "mode": "late_once", "late_ms": 800},
        "5": {"holding": {"0": 5}},
    }}
    return spec, values, known_at


# --- running the device --------------------------------------------------------------------------

class DeviceProc:
    def __init__(self, spec_path, args, logdir, name):
        self.errpath = os.path.join(logdir, f"device-{name}.err")
        self.err = open(self.errpath, "w")
        t0 = time.monotonic()
        self.p = subprocess.Popen([sys.executable, DEVICE, "--spec", spec_path, *args],
                                  stdout=subprocess.PIPE, stderr=self.err, text=True)
        r, _, _ = select.select([self.p.stdout], [], [], 10)
        line = self.p.stdout.readline().strip() if r else ""
        self.startup = time.monotonic() - t0
        if line != "READY":
            self.stop()
            raise RuntimeError(f"device {name} not READY (got {line!r}): {self.stderr()}")

    def stderr(self):
        self.err.flush()
        with open(self.errpath) as f:
            return f.read()

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.err.close()
        return self.p.returncode


class Socat:
    def __init__(self, a, b, logdir):
        self.a, self.b = a, b
        self.log = open(os.path.join(logdir, "socat.err"), "a")
        self.p = subprocess.Popen(["socat", "-d", "-d", f"pty,raw,echo=0,link={a}",
                                   f"pty,raw,echo=0,link={b}"], stderr=self.log)
        deadline = time.monotonic() + 5
        while not (os.path.exists(a) and os.path.exists(b)):
            if time.monotonic() > deadline:
                raise RuntimeError("socat links did not appear")
            time.sleep(0.01)

    def stop(self, kill=False):
        # SIGTERM: socat removes its links. SIGKILL leaves them dangling (lexists, !exists)
        # until a new socat with the same link names replaces them.
        if self.p.poll() is None:
            self.p.kill() if kill else self.p.terminate()
            self.p.wait(5)
        self.log.close()


# --- client helpers ------------------------------------------------------------------------------

async def call(x):
    """Result of a pymodbus call, sync (serial client) or async: ('ok', response),
    ('exc', exception code) or ('timeout', error text). `x` is a coroutine, a response, or a
    zero-argument callable making the call (so a sync call made later still lands in here)."""
    try:
        if callable(x):
            x = x()
        rr = await x if inspect.isawaitable(x) else x
    except ModbusException as e:    # no answer within the client's timeout
        return "timeout", str(e)
    if rr.isError():
        return "exc", getattr(rr, "exception_code", None)
    return "ok", rr


async def common_checks(tag, c):
    """Checks every transport must pass, on unit 1 (and 99 which does not exist)."""
    u = 1
    hr = functools.partial(P, c.read_holding_registers, device_id=u)   # hr(addr, count=n)
    ir = functools.partial(P, c.read_input_registers, device_id=u)
    co = functools.partial(P, c.read_coils, device_id=u)
    di = functools.partial(P, c.read_discrete_inputs, device_id=u)

    async def expect(name, req, want):
        """want: "ok", an exception code, or a list (the registers/bits that must come back)."""
        st, rr = await call(req)
        if isinstance(want, list):
            got = (rr.registers or rr.bits[:len(want)]) if st == "ok" else None
            ok = got == want
        else:
            ok = st == "ok" if want == "ok" else (st == "exc" and rr == want)
        check(f"{tag}: {name} -> {want}", ok, (st, rr))

    await expect("raw holding 0..2", hr(0, count=3), [4660, 22136, 0])
    await expect("raw input 0..1", ir(0, count=2), [1, 0])
    await expect("coils 0..7", co(0, count=8), [1, 0, 0, 0, 0, 1, 0, 0])
    await expect("discrete 0..3", di(0, count=4), [0, 0, 0, 1])

    # every type x order, decoded here
    _, values, known_at = SPEC_INFO
    for table, addr, typ, order, value, count in values:
        st, rr = await call((hr if table == "holding" else ir)(addr, count=nregs(typ, count)))
        got = decode(typ, order, rr.registers) if st == "ok" else (st, rr)
        check(f"{tag}: {typ} {order} in {table}@{addr}", got == value,
              f"got {got!r} want {value!r}")
        # pymodbus's converter as a third opinion where it has the same notion (word order only)
        if st == "ok" and typ not in ("string", "bool") and order in ("ABCD", "CDAB"):
            dt = getattr(c.DATATYPE, {"u": "UINT", "i": "INT", "f": "FLOAT"}[typ[0]] + typ[1:])
            wo = "big" if order == "ABCD" else "little"
            pv = c.convert_from_registers(rr.registers, dt, word_order=wo)
            check(f"{tag}: pymodbus converter {typ} {order}", pv == value, f"{pv!r} != {value!r}")
    for addr, typ, order, regs in known_at:
        st, rr = await call(hr(addr, count=len(regs)))
        got = [hex(r) for r in rr.registers] if st == "ok" else (st, rr)
        check(f"{tag}: known vector {typ} {order}", got == [hex(r) for r in regs],
              f"got {got} want {[hex(r) for r in regs]}")

    # exceptions: max_read (3), holes and the end of the address space (2)
    await expect("read 10 holding (= max_read)", hr(0, count=10), "ok")
    await expect("read 11 holding (> max_read)", hr(0, count=11), 3)
    await expect("read 11 input (> max_read)", ir(0, count=11), 3)
    await expect("read 11 coils (> max_read)", co(0, count=11), 3)
    await expect("read 11 discrete (> max_read)", di(0, count=11), 3)
    await expect("read 95..99 (just before hole)", hr(95, count=5), "ok")
    await expect("read 95..100 (touches hole)", hr(95, count=6), 2)
    await expect("read input 109 (in hole)", ir(109, count=1), 2)
    await expect("read holding 105..114 (hole inside)", hr(105, count=10), 2)
    await expect("read 110 (just after hole)", hr(110, count=1), "ok")
    await expect("read 9999", hr(9999, count=1), "ok")
    await expect("read 9999..10000", hr(9999, count=2), 2)
    await expect("read 11 at 9999 (count checked first)", hr(9999, count=11), 3)
    await expect("write in hole", P(c.write_register, 105, 1, device_id=u), 2)

    # writes update the tables
    await expect("write_register", P(c.write_register, 50, 777, device_id=u), "ok")
    await expect("write_registers", P(c.write_registers, 60, [1, 2, 65535], device_id=u), "ok")
    await expect("write_coil", P(c.write_coil, 20, True, device_id=u), "ok")
    await expect("write_coils", P(c.write_coils, 30, [True, False, True], device_id=u), "ok")
    await expect("write_register read back", hr(50, count=1), [777])
    await expect("write_registers read back", hr(60, count=3), [1, 2, 65535])
    await expect("write_coil read back", co(20, count=1), [1])
    await expect("write_coils read back", co(30, count=3), [1, 0, 1])
    await expect("write_register back to 0", P(c.write_register, 50, 0, device_id=u), "ok")

    # absent unit (99) and silent unit (2) -> no answer; unit 5 next to them still fine
    for uid, what in ((99, "absent"), (2, "silent")):
        st, rr = await call(P(c.read_holding_registers, 0, count=1, device_id=uid))
        check(f"{tag}: {what} unit {uid} -> timeout", st == "timeout", (st, rr))
        st, rr = await call(P(c.read_holding_registers, 0, count=1, device_id=5))
        check(f"{tag}: unit 5 answers after {what} unit", st == "ok" and rr.registers == [5],
              (st, rr))


async def late_check(tag, c, late_ms):
    """late_once unit 3 via pymodbus with a timeout above late_ms: slow once, then fast."""
    t0 = time.monotonic()
    st, rr = await call(P(c.read_holding_registers, 0, count=1, device_id=3))
    dt1 = time.monotonic() - t0
    check(f"{tag}: late_once first answer after {dt1 * 1000:.0f} ms (>= {late_ms})",
          st == "ok" and rr.registers == [3] and late_ms - 20 <= dt1 * 1000 < late_ms + 500,
          (st, rr, dt1))
    t0 = time.monotonic()
    st, rr = await call(P(c.read_holding_registers, 0, count=1, device_id=3))
    dt2 = time.monotonic() - t0
    check(f"{tag}: late_once second answer after {dt2 * 1000:.0f} ms (fast)",
          st == "ok" and rr.registers == [3] and dt2 < 0.3, (st, rr, dt2))
    return dt1, dt2


# --- TCP -----------------------------------------------------------------------------------------

def mbap(tid, uid, pdu):
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, uid) + pdu


def recv_frames(sock, until):
    """MBAP frames (tid, uid, pdu, arrival time) received before `until` (monotonic)."""
    buf, frames = b"", []
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return frames
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except socket.timeout:
            return frames
        if not data:
            return frames
        buf += data
        while len(buf) >= 7:
            tid, _, length, uid = struct.unpack(">HHHB", buf[:7])
            if len(buf) < 6 + length:
                break
            frames.append((tid, uid, buf[7:6 + length], time.monotonic()))
            buf = buf[6 + length:]


async def run_tcp(spec_path, logdir):
    port = free_port()
    dev = DeviceProc(spec_path, ["--tcp", f"127.0.0.1:{port}"], logdir, "tcp")
    try:
        c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.5, retries=0)
        await c.connect()
        await common_checks("tcp", c)
        c.close()
        c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0)
        await c.connect()
        await late_check("tcp", c, 1500)
        c.close()

        # Raw socket: the late reply (unit 4, 800 ms) keeps its transaction id and comes after
        # a later request's reply on the same connection.
        s = socket.create_connection(("127.0.0.1", port))
        t0 = time.monotonic()
        s.sendall(mbap(0x0101, 4, bytes.fromhex("03 0000 0001")))
        early = recv_frames(s, t0 + 0.3)
        check("tcp raw: late unit silent for 300 ms", early == [], early)
        s.sendall(mbap(0x0202, 5, bytes.fromhex("03 0000 0001")))
        frames = recv_frames(s, t0 + 1.3)
        got = [(tid, uid, pdu.hex()) for tid, uid, pdu, _ in frames]
        check("tcp raw: other request answered first, then the late reply with its own tid",
              got == [(0x0202, 5, "03020005"), (0x0101, 4, "03020004")], got)
        if len(frames) == 2:
            late = frames[1][3] - t0
            check(f"tcp raw: late reply at {late * 1000:.0f} ms (~800)", 0.78 <= late <= 1.0, late)
        # unknown function code -> exception 1
        s.sendall(mbap(7, 1, bytes([0x07])))
        got = [(tid, pdu.hex()) for tid, _, pdu, _ in recv_frames(s, time.monotonic() + 0.5)]
        check("tcp raw: function 7 -> 0x87 code 1", got == [(7, "8701")], got)
        # protocol limits on unit 5 (no max_read): 125 registers readable, 126 -> code 3
        s.sendall(mbap(8, 5, bytes.fromhex("03 0000 007d")))
        s.sendall(mbap(9, 5, bytes.fromhex("03 0000 007e")))
        got = [(tid, p[:2].hex()) for tid, _, p, _ in recv_frames(s, time.monotonic() + 0.5)]
        check("tcp raw: read 125 -> ok, 126 -> 0x83 code 3", got == [(8, "03fa"), (9, "8303")], got)
        s.close()
        err = dev.stderr()
        check("tcp: device stderr quiet", err == "", err)
        check("tcp: SIGTERM -> exit 0", dev.stop() == 0)
    finally:
        dev.stop()
    return dev.startup


# --- RTU on a socat pty pair ---------------------------------------------------------------------

def rtu(uid, pdu):
    body = bytes([uid]) + pdu
    return body + crc16(body)


def serial_read_until(port, until):
    """(bytes, time of the first byte) read from `port` before `until` (monotonic)."""
    buf, first = b"", None
    while time.monotonic() < until:
        port.timeout = max(0.0, until - time.monotonic())
        chunk = port.read(1)   # pyserial waits for all `size` bytes or the timeout
        if chunk and first is None:
            first = time.monotonic()
        buf += chunk
        if chunk:   # then take what follows until the line is quiet for 30 ms
            port.timeout = 0.03
            while more := port.read(256):
                buf += more
            break
    return buf, first


async def run_rtu(spec_path, logdir, baud=9600):
    a, b = os.path.join(logdir, "dev-a"), os.path.join(logdir, "dev-b")
    socat = Socat(a, b, logdir)
    dev = DeviceProc(spec_path, ["--serial", a, "--baud", str(baud)], logdir, "rtu")
    try:
        c = ModbusSerialClient(b, baudrate=baud, timeout=0.5, retries=0)
        check("rtu: pymodbus serial client connects", c.connect())
        await common_checks("rtu", c)
        c.close()
        c = ModbusSerialClient(b, baudrate=baud, timeout=3, retries=0)
        c.connect()
        await late_check("rtu", c, 1500)
        c.close()

        # Raw line checks with pyserial.
        p = serial.Serial(b, baud, timeout=0)
        bad = bytearray(rtu(1, bytes.fromhex("03 0000 0001")))
        bad[-1] ^= 0xFF
        p.write(bytes(bad))
        got, _ = serial_read_until(p, time.monotonic() + 0.3)
        check("rtu raw: bad CRC dropped silently", got == b"", got.hex())
        p.write(rtu(1, bytes.fromhex("03 0000 0001")))
        got, _ = serial_read_until(p, time.monotonic() + 0.5)
        check("rtu raw: valid frame after it answered", got == rtu(1, bytes.fromhex("03 02 1234")),
              got.hex())
        # late_once unit 4 (800 ms): silent at first, unit 5 answers meanwhile, then the late
        # frame appears on the line by itself.
        t0 = time.monotonic()
        p.write(rtu(4, bytes.fromhex("03 0000 0001")))
        got, _ = serial_read_until(p, t0 + 0.3)
        check("rtu raw: late unit silent for 300 ms", got == b"", got.hex())
        p.write(rtu(5, bytes.fromhex("03 0000 0001")))
        got, _ = serial_read_until(p, time.monotonic() + 0.3)
        check("rtu raw: unit 5 answers while unit 4's reply is pending",
              got == rtu(5, bytes.fromhex("03 02 0005")), got.hex())
        got, first = serial_read_until(p, t0 + 1.3)
        late = (first - t0) if first else None
        check("rtu raw: unit 4's late frame arrives alone",
              got == rtu(4, bytes.fromhex("03 02 0004")), got.hex())
        check(f"rtu raw: late frame at {'-' if late is None else f'{late * 1000:.0f}'} ms (~800)",
              late is not None and 0.78 <= late <= 1.0, late)
        p.write(rtu(1, bytes([0x07])))
        got, _ = serial_read_until(p, time.monotonic() + 0.5)
        check("rtu raw: function 7 -> 0x87 code 1", got == rtu(1, bytes.fromhex("8701")), got.hex())
        p.write(rtu(0, bytes.fromhex("06 0033 0042")))   # broadcast write: applied, no reply
        got, _ = serial_read_until(p, time.monotonic() + 0.3)
        check("rtu raw: broadcast write not answered", got == b"", got.hex())
        p.write(rtu(5, bytes.fromhex("03 0033 0001")))
        got, _ = serial_read_until(p, time.monotonic() + 0.5)
        check("rtu raw: broadcast write applied", got == rtu(5, bytes.fromhex("03 02 0042")),
              got.hex())
        p.close()

        # The client closing and reopening its end is harmless (socat keeps running).
        for i in range(3):
            c = ModbusSerialClient(b, baudrate=baud, timeout=0.5, retries=0)
            c.connect()
            st, rr = await call(P(c.read_holding_registers, 0, count=1, device_id=5))
            c.close()
            check(f"rtu: client reopen #{i + 1} served", st == "ok" and rr.registers == [5],
                  (st, rr))
        check("rtu: socat still running after client reopens", socat.p.poll() is None)

        # socat restarted with the same link names: the device reopens its end by itself.
        for n, kill in enumerate((False, True), 1):
            how = "SIGKILL" if kill else "SIGTERM"
            socat.stop(kill)
            if kill:
                check("rtu: links dangle after socat SIGKILL",
                      os.path.lexists(a) and not os.path.exists(a))
            else:
                check("rtu: links removed after socat SIGTERM",
                      not os.path.lexists(a) and not os.path.lexists(b))
            time.sleep(0.3)
            socat = Socat(a, b, logdir)
            deadline = time.monotonic() + 3
            while dev.stderr().count("reopened") < n and time.monotonic() < deadline:
                time.sleep(0.05)
            c = ModbusSerialClient(b, baudrate=baud, timeout=0.5, retries=0)
            c.connect()
            st, rr = await call(P(c.read_holding_registers, 0, count=1, device_id=5))
            c.close()
            check(f"rtu: served again after socat {how} + restart",
                  st == "ok" and rr.registers == [5], (st, rr, dev.stderr()))
        check("rtu: SIGTERM -> exit 0", dev.stop() == 0)
    finally:
        dev.stop()
        socat.stop()
    return dev.startup


# --- RTU over TCP --------------------------------------------------------------------------------

async def run_rtu_tcp(spec_path, logdir):
    port = free_port()
    dev = DeviceProc(spec_path, ["--rtu-tcp", f"127.0.0.1:{port}"], logdir, "rtu-tcp")
    try:
        c = AsyncModbusTcpClient("127.0.0.1", port=port, framer=FramerType.RTU, timeout=0.5,
                                 retries=0)
        await c.connect()
        await common_checks("rtu-tcp", c)
        c.close()
        c = AsyncModbusTcpClient("127.0.0.1", port=port, framer=FramerType.RTU, timeout=3,
                                 retries=0)
        await c.connect()
        await late_check("rtu-tcp", c, 1500)
        c.close()
    finally:
        dev.stop()
    return dev.startup


async def main_async(only):
    global SPEC_INFO
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)   # timeouts are expected here
    with tempfile.TemporaryDirectory(prefix="modbus-selfcheck-") as tmp:
        SPEC_INFO = make_spec()
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(SPEC_INFO[0], f, indent=1)
        runs = {"tcp": run_tcp, "rtu": run_rtu, "rtu-tcp": run_rtu_tcp}
        for name in only:
            t0 = time.monotonic()
            n0 = len(PASSED) + len(FAILED)
            try:
                startup = await runs[name](spec_path, tmp)
                info = f"device READY in {startup * 1000:.0f} ms"
            except Exception as e:   # a crash is one failure, the other transports still run
                check(f"{name}: ran to the end", False, repr(e))
                info = "crashed"
            print(f"{name}: {len(PASSED) + len(FAILED) - n0} checks in "
                  f"{time.monotonic() - t0:.1f} s ({info})", flush=True)


def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="print every check")
    ap.add_argument("--only", default="tcp,rtu,rtu-tcp")
    args = ap.parse_args()
    VERBOSE = args.verbose
    asyncio.run(main_async(args.only.split(",")))
    print(f"{len(PASSED)} passed, {len(FAILED)} failed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
