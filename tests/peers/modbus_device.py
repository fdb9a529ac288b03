#!/usr/bin/env python3
"""A simulated Modbus device (one or several units) for gkgw's black-box tests.

  modbus_device.py --spec SPEC.json (--tcp HOST:PORT | --serial PATH [--baud 9600] [--parity N]
                   | --rtu-tcp HOST:PORT) [--gap-ms MS] [-v]

Prints exactly `READY` on stdout (flushed) once it is serving, then runs until SIGTERM/SIGINT
(exit 0) or SIGKILL. Diagnostics go to stderr only. Spec format and behaviour: MODBUS.md.

Why a hand-written server and not pymodbus's: the tests need per-unit misbehaviour that a real
bus shows and pymodbus's server hides. pymodbus answers every unit id it is given a context for
(or all of them with `single=True`), answers each request before reading the next, and has no
hook to hold back one reply for a while and send it later, after other replies, with its
original transaction id (TCP) or as raw late bytes on the line (RTU). Bending its request
handler/framer for that depends on internals that change between 3.x releases. The protocol
part needed here (function codes 1-6, 15, 16, exceptions, MBAP, RTU CRC16 and silence framing)
is small, so it is written out below; pymodbus is the independent peer in modbus_selfcheck.py.
pyserial is used only to open and configure the serial port; I/O goes through the fd directly.

Transports:
  --tcp      Modbus TCP (MBAP header), any number of connections.
  --serial   Modbus RTU on a tty (e.g. one end of a socat pty pair). If the tty hangs up (socat
             died) the port is reopened as soon as PATH can be opened again (socat restarted
             with the same link name).
  --rtu-tcp  RTU frames (CRC, no MBAP) over TCP, as a serial-to-Ethernet converter sends them.
"""
import argparse
import asyncio
import json
import os
import signal
import struct
import sys
import time

import serial  # pyserial

MAX_ADDR = 9999            # registers/bits exist at 0..=MAX_ADDR (minus holes)
MAX_READ_REGS = 125        # protocol limits (Modbus application protocol v1.1b3)
MAX_READ_BITS = 2000
MAX_WRITE_REGS = 123
MAX_WRITE_BITS = 1968

# exception codes
ILLEGAL_FUNCTION = 1
ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3

VERBOSE = False


def log(msg):
    print(f"modbus_device: {msg}", file=sys.stderr, flush=True)


def debug(msg):
    if VERBOSE:
        log(msg)


# --- value encoding ------------------------------------------------------------------------------

STRUCT_FMT = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "u64": ">Q", "i64": ">q",
              "f32": ">f", "f64": ">d", "bool": ">H"}
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")


def encode_value(typ, order, value, count=None):
    """Registers (list of u16) holding `value` as `typ` in byte order `order`.

    The big-endian bytes are the ABCD form. CDAB reverses the register list (for every width,
    so a 64-bit value's four registers are fully reversed), BADC swaps the two bytes inside each
    register, DCBA does both. For strings only the byte swap applies: register order is the
    character order whatever `order` says.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}")
    if typ == "string":
        raw = str(value).encode("ascii")
        n = count if count is not None else (len(raw) + 1) // 2
        if len(raw) > 2 * n:
            raise ValueError(f"string {value!r} does not fit in {n} registers")
        raw = raw.ljust(2 * n, b"\0")
    elif typ in STRUCT_FMT:
        v = (1 if value else 0) if typ == "bool" else value
        if typ[0] in "ui" and not isinstance(v, int):
            raise ValueError(f"{typ} needs an integer, got {value!r}")
        raw = struct.pack(STRUCT_FMT[typ], v)   # raises struct.error when out of range
    else:
        raise ValueError(f"unknown type {typ!r}")
    words = [(raw[i] << 8) | raw[i + 1] for i in range(0, len(raw), 2)]
    if order in ("BADC", "DCBA"):
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    if order in ("CDAB", "DCBA") and typ != "string":
        words.reverse()
    return words


# --- the device model ----------------------------------------------------------------------------

class Unit:
    """One slave/unit id: four tables plus its misbehaviour settings."""

    def __init__(self, uid, spec):
        self.uid = uid
        self.holding = {int(a): int(v) for a, v in spec.get("holding", {}).items()}
        self.input = {int(a): int(v) for a, v in spec.get("input", {}).items()}
        self.coils = {int(a): bool(v) for a, v in spec.get("coils", {}).items()}
        self.discrete = {int(a): bool(v) for a, v in spec.get("discrete", {}).items()}
        for name in ("holding", "input"):
            for a, v in getattr(self, name).items():
                if not 0 <= a <= MAX_ADDR or not 0 <= v <= 0xFFFF:
                    raise ValueError(f"unit {uid}: {name}[{a}] = {v} out of range")
        for item in spec.get("values", []):
            table = item["table"]
            try:
                words = encode_value(item["type"], item.get("order", "ABCD"), item["value"],
                                     item.get("count"))
            except (ValueError, struct.error) as e:
                raise ValueError(f"unit {uid}: {item}: {e}") from None
            if table in ("holding", "input"):
                regs = getattr(self, table)
                for i, w in enumerate(words):
                    regs[item["address"] + i] = w
            elif table in ("coils", "discrete") and item["type"] == "bool":
                getattr(self, table)[item["address"]] = bool(item["value"])
            else:
                raise ValueError(f"unit {uid}: cannot put a {item['type']} in {table}")
        self.max_read = spec.get("max_read")
        self.holes = [(int(lo), int(hi)) for lo, hi in spec.get("holes", [])]
        self.mode = spec.get("mode", "normal")
        if self.mode not in ("normal", "silent", "late_once"):
            raise ValueError(f"unit {uid}: unknown mode {self.mode!r}")
        self.late_s = spec.get("late_ms", 1000) / 1000.0
        self.requests_seen = 0

    def touches_hole(self, addr, count):
        last = addr + count - 1
        return any(lo <= last and addr <= hi for lo, hi in self.holes)

    # Each handler gets the PDU without its function code and returns the reply PDU body, or an
    # int exception code. Checks follow the spec's order: quantity (3), then address (2).

    def read_bits(self, table, body):
        if len(body) != 4:
            return ILLEGAL_DATA_VALUE
        addr, count = struct.unpack(">HH", body)
        if not 1 <= count <= MAX_READ_BITS or (self.max_read and count > self.max_read):
            return ILLEGAL_DATA_VALUE
        if addr + count - 1 > MAX_ADDR:
            return ILLEGAL_DATA_ADDRESS
        packed = bytearray((count + 7) // 8)
        for i in range(count):
            if table.get(addr + i, False):
                packed[i // 8] |= 1 << (i % 8)
        return bytes([len(packed)]) + bytes(packed)

    def read_regs(self, table, body):
        if len(body) != 4:
            return ILLEGAL_DATA_VALUE
        addr, count = struct.unpack(">HH", body)
        if not 1 <= count <= MAX_READ_REGS or (self.max_read and count > self.max_read):
            return ILLEGAL_DATA_VALUE
        if addr + count - 1 > MAX_ADDR or self.touches_hole(addr, count):
            return ILLEGAL_DATA_ADDRESS
        return bytes([2 * count]) + b"".join(struct.pack(">H", table.get(addr + i, 0))
                                             for i in range(count))

    def write_coil(self, body):
        if len(body) != 4:
            return ILLEGAL_DATA_VALUE
        addr, value = struct.unpack(">HH", body)
        if value not in (0x0000, 0xFF00):
            return ILLEGAL_DATA_VALUE
        if addr > MAX_ADDR:
            return ILLEGAL_DATA_ADDRESS
        self.coils[addr] = value == 0xFF00
        return body  # echo

    def write_register(self, body):
        if len(body) != 4:
            return ILLEGAL_DATA_VALUE
        addr, value = struct.unpack(">HH", body)
        if addr > MAX_ADDR or self.touches_hole(addr, 1):
            return ILLEGAL_DATA_ADDRESS
        self.holding[addr] = value
        return body  # echo

    def write_coils(self, body):
        if len(body) < 5:
            return ILLEGAL_DATA_VALUE
        addr, count, nbytes = struct.unpack(">HHB", body[:5])
        if (not 1 <= count <= MAX_WRITE_BITS or nbytes != (count + 7) // 8
                or len(body) != 5 + nbytes):
            return ILLEGAL_DATA_VALUE
        if addr + count - 1 > MAX_ADDR:
            return ILLEGAL_DATA_ADDRESS
        for i in range(count):
            self.coils[addr + i] = bool(body[5 + i // 8] & (1 << (i % 8)))
        return body[:4]

    def write_registers(self, body):
        if len(body) < 5:
            return ILLEGAL_DATA_VALUE
        addr, count, nbytes = struct.unpack(">HHB", body[:5])
        if not 1 <= count <= MAX_WRITE_REGS or nbytes != 2 * count or len(body) != 5 + nbytes:
            return ILLEGAL_DATA_VALUE
        if addr + count - 1 > MAX_ADDR or self.touches_hole(addr, count):
            return ILLEGAL_DATA_ADDRESS
        for i in range(count):
            self.holding[addr + i] = struct.unpack_from(">H", body, 5 + 2 * i)[0]
        return body[:4]

    def execute(self, pdu):
        """Reply PDU (function code included) for a request PDU; never None."""
        fc, body = pdu[0], pdu[1:]
        handlers = {
            1: lambda: self.read_bits(self.coils, body),
            2: lambda: self.read_bits(self.discrete, body),
            3: lambda: self.read_regs(self.holding, body),
            4: lambda: self.read_regs(self.input, body),
            5: lambda: self.write_coil(body),
            6: lambda: self.write_register(body),
            15: lambda: self.write_coils(body),
            16: lambda: self.write_registers(body),
        }
        result = handlers[fc]() if fc in handlers else ILLEGAL_FUNCTION
        if isinstance(result, int):
            return bytes([fc | 0x80, result])
        return bytes([fc]) + result


class Device:
    """All units behind one transport (a TCP device/gateway or one RS-485 bus)."""

    def __init__(self, spec):
        self.units = {}
        for uid, uspec in spec["units"].items():
            uid = int(uid)
            if not 1 <= uid <= 247:
                raise ValueError(f"unit id {uid} not in 1..=247")
            self.units[uid] = Unit(uid, uspec)

    def respond(self, uid, pdu):
        """(delay_seconds, reply_pdu) for a request, or None when nothing is to be sent."""
        if not pdu:
            return None
        if uid == 0:
            # Broadcast: writes go to every unit that listens; nobody answers.
            if pdu[0] in (5, 6, 15, 16):
                for unit in self.units.values():
                    if unit.mode != "silent":
                        unit.execute(pdu)
            return None
        unit = self.units.get(uid)
        if unit is None or unit.mode == "silent":
            debug(f"unit {uid}: no answer ({'absent' if unit is None else 'silent'})")
            return None
        unit.requests_seen += 1
        # The reply is computed now (from the tables as they are now) and only sent late.
        reply = unit.execute(pdu)
        delay = unit.late_s if unit.mode == "late_once" and unit.requests_seen == 1 else 0.0
        return delay, reply


# --- RTU framing ---------------------------------------------------------------------------------

def crc16(data):
    """Modbus RTU CRC16 (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


class RtuFramer:
    """Cuts a byte stream into frames at silent gaps and answers each valid frame.

    `send(bytes)` writes to the line. A late reply is scheduled with a timer and written when it
    is due, whatever happened on the line meanwhile (as a slow device would): it is never held
    back behind, nor holds back, other replies.
    """

    def __init__(self, device, gap_s, send, name):
        self.device = device
        self.gap_s = gap_s
        self.send = send
        self.name = name
        self.buf = bytearray()
        self.timer = None
        self.loop = asyncio.get_running_loop()

    def feed(self, data):
        self.buf += data
        if self.timer:
            self.timer.cancel()
        self.timer = self.loop.call_later(self.gap_s, self._frame_done)

    def close(self):
        if self.timer:
            self.timer.cancel()
        self.buf.clear()

    def _frame_done(self):
        frame, self.buf = bytes(self.buf), bytearray()
        self.timer = None
        if len(frame) < 4 or crc16(frame[:-2]) != frame[-2] | (frame[-1] << 8):
            debug(f"{self.name}: dropped frame (bad CRC or too short): {frame.hex(' ')}")
            return
        uid, pdu = frame[0], frame[1:-2]
        debug(f"{self.name}: <- unit {uid} {pdu.hex(' ')}")
        r = self.device.respond(uid, pdu)
        if r is None:
            return
        delay, reply = r
        out = bytes([uid]) + reply
        crc = crc16(out)
        out += bytes([crc & 0xFF, crc >> 8])
        if delay > 0:
            debug(f"{self.name}: unit {uid} reply held back {delay * 1000:.0f} ms")
            self.loop.call_later(delay, self._send, uid, out)
        else:
            self._send(uid, out)

    def _send(self, uid, out):
        debug(f"{self.name}: -> unit {uid} {out[1:-2].hex(' ')}")
        self.send(out)


# --- transports ----------------------------------------------------------------------------------

async def serve_tcp(device, host, port):
    loop = asyncio.get_running_loop()

    async def conn(reader, writer):
        peer = writer.get_extra_info("peername")

        def send(frame):
            tid, uid = struct.unpack_from(">H", frame)[0], frame[6]
            debug(f"tcp {peer}: -> tid {tid} unit {uid} {frame[7:].hex(' ')}")
            if not writer.is_closing():   # a late reply may outlive its connection
                writer.write(frame)

        try:
            while True:
                hdr = await reader.readexactly(7)
                tid, proto, length, uid = struct.unpack(">HHHB", hdr)
                if proto != 0 or not 2 <= length <= 254:
                    log(f"tcp {peer}: bad MBAP header {hdr.hex(' ')}, closing")
                    break
                pdu = await reader.readexactly(length - 1)
                debug(f"tcp {peer}: <- tid {tid} unit {uid} {pdu.hex(' ')}")
                r = device.respond(uid, pdu)
                if r is None:
                    continue
                delay, reply = r
                frame = struct.pack(">HHHB", tid, 0, len(reply) + 1, uid) + reply
                if delay > 0:
                    debug(f"tcp {peer}: tid {tid} reply held back {delay * 1000:.0f} ms")
                    loop.call_later(delay, send, frame)
                else:
                    send(frame)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    await asyncio.start_server(conn, host, port)


async def serve_rtu_tcp(device, host, port, gap_s):
    async def conn(reader, writer):
        name = f"rtu-tcp {writer.get_extra_info('peername')}"

        def send(out):
            if not writer.is_closing():
                writer.write(out)

        framer = RtuFramer(device, gap_s, send, name)
        try:
            while data := await reader.read(4096):
                framer.feed(data)
        except ConnectionError:
            pass
        finally:
            framer.close()
            writer.close()

    await asyncio.start_server(conn, host, port)


class SerialLine:
    """An RTU bus on a tty. Reopens the tty after a hang-up (socat died and came back)."""

    def __init__(self, device, path, baud, parity, gap_s):
        self.device, self.path, self.baud, self.parity = device, path, baud, parity
        self.loop = asyncio.get_running_loop()
        self.port = None
        self.fd = None
        self.framer = RtuFramer(device, gap_s, self.write, f"serial {path}")

    def open(self):
        """Open and configure the tty (raw 8 data bits, 1 stop bit); raises on failure."""
        # pyserial opens O_RDWR|O_NOCTTY|O_NONBLOCK, sets raw mode and flushes the input queue,
        # so bytes a client wrote while nobody had this end open are discarded.
        self.port = serial.Serial(self.path, self.baud, bytesize=8, parity=self.parity,
                                  stopbits=1, timeout=0)
        self.fd = self.port.fileno()
        self.loop.add_reader(self.fd, self._readable)

    def _readable(self):
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError as e:
            data, err = b"", e
        else:
            err = None
        if data:
            self.framer.feed(data)
            return
        # EOF / EIO: the other side of the pty (socat) is gone.
        log(f"serial {self.path}: hang-up ({err or 'EOF'}), waiting to reopen")
        self._close()
        self.loop.create_task(self._reopen())

    def _close(self):
        self.framer.close()
        if self.fd is not None:
            self.loop.remove_reader(self.fd)
            self.fd = None
        if self.port is not None:
            try:
                self.port.close()
            except Exception:
                pass
            self.port = None

    async def _reopen(self):
        while True:
            await asyncio.sleep(0.1)
            try:
                self.open()
                log(f"serial {self.path}: reopened")
                return
            except (OSError, serial.SerialException):
                self.port = self.fd = None

    def write(self, data):
        if self.fd is None:
            return  # hung up: the bytes are lost, as on a cut cable
        try:
            n = os.write(self.fd, data)
            if n != len(data):
                log(f"serial {self.path}: short write {n}/{len(data)}")
        except OSError as e:
            log(f"serial {self.path}: write failed: {e}")


def parse_hostport(s):
    host, _, port = s.rpartition(":")
    return host or "127.0.0.1", int(port)


async def main_async(args, device):
    # 3.5 character times (11 bits per character, the worst case with parity) but at least
    # 5 ms: ptys deliver a frame as one burst, scheduling jitter is the larger gap.
    gap_s = args.gap_ms / 1000.0 if args.gap_ms else max(3.5 * 11 / args.baud, 0.005)
    if args.tcp:
        await serve_tcp(device, *parse_hostport(args.tcp))
    elif args.rtu_tcp:
        await serve_rtu_tcp(device, *parse_hostport(args.rtu_tcp), gap_s)
    else:
        line = SerialLine(device, args.serial, args.baud, args.parity, gap_s)
        deadline = time.monotonic() + args.open_timeout
        while True:  # the pty link may not exist yet when socat was just started
            try:
                line.open()
                break
            except (OSError, serial.SerialException) as e:
                if time.monotonic() > deadline:
                    log(f"cannot open {args.serial}: {e}")
                    sys.exit(2)
                await asyncio.sleep(0.05)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("READY", flush=True)
    await stop.wait()


def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", required=True, help="JSON file, see MODBUS.md")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="Modbus TCP server")
    where.add_argument("--serial", metavar="PATH", help="Modbus RTU on this tty")
    where.add_argument("--rtu-tcp", metavar="HOST:PORT", help="Modbus RTU frames over TCP")
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--parity", choices="NEO", default="N")
    ap.add_argument("--gap-ms", type=float, default=0,
                    help="RTU end-of-frame silence (default: 3.5 chars, at least 5 ms)")
    ap.add_argument("--open-timeout", type=float, default=5.0,
                    help="seconds to wait for --serial PATH to appear")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every frame to stderr")
    args = ap.parse_args()
    VERBOSE = args.verbose
    try:
        with open(args.spec) as f:
            device = Device(json.load(f))
    except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
        log(f"bad spec {args.spec}: {e!r}")
        sys.exit(2)
    try:
        asyncio.run(main_async(args, device))
    except OSError as e:   # e.g. the TCP port is taken
        log(f"cannot serve: {e}")
        sys.exit(2)


if __name__ == "__main__":
    main()
