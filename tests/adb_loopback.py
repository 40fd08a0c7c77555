"""A loopback "phone": an adbd stand-in on 127.0.0.1 that speaks the real ADB wire protocol.

Transport: 24-byte little-endian headers (command, arg0, arg1, data length, byte-sum checksum,
command ^ 0xffffffff), CNXN handshake without AUTH (like a phone with ``ro.adb.secure=0``),
OPEN/OKAY/WRTE/CLSE streams with one outstanding WRTE per direction per stream. Services:

- ``shell:CMD`` (v1: output, then CLSE; we advertise no ``shell_v2`` so real clients use v1):
  ``sh -c CMD`` with ``/data/local/tmp`` and ``/sys/`` mapped into a sandbox directory, and a
  ``getprop`` on the PATH answering from a Pixel-like property list;
- ``sync:``: STAT, LIST, SEND (DATA..., DONE → OKAY/FAIL), RECV (DATA..., DONE or FAIL), QUIT.

Debian's ``adb`` (through its server, ``adb connect 127.0.0.1:PORT``) and adb-shell both work
against it. The test double is the phone only; what runs "on" it runs for real on this machine.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import socket
import stat
import struct
import subprocess
import threading
from pathlib import Path

VERSION = 0x01000001  # >= this, hosts may skip checksums; we still send correct ones
MAXDATA = 256 * 1024
HEADER = struct.Struct("<6I")
SYNC_HDR = struct.Struct("<4sI")
PROPS = {
    "ro.product.manufacturer": "Google", "ro.product.model": "Pixel 7 (loopback)", "ro.product.device": "panther",
    "ro.product.board": "panther", "ro.board.platform": "gs201", "ro.soc.model": "GS201",
    "ro.hardware": "panther", "ro.build.version.release": "14", "ro.build.version.sdk": "34",
    "ro.product.cpu.abi": "arm64-v8a", "ro.build.fingerprint": "google/panther/panther:14/UQ1A/1:user/release-keys",
    "ro.serialno": "LOOPBACK0001",
}
GETPROP_SH = """#!/bin/sh
F="$(dirname "$0")/../build.prop.list"
if [ $# -eq 0 ]; then cat "$F"; else sed -n "s/^\\[$1\\]: \\[\\(.*\\)\\]\\$/\\1/p" "$F"; fi
"""


def _cmd(name: bytes) -> int:
    return int.from_bytes(name, "little")


CNXN, OPEN, OKAY, WRTE, CLSE, AUTH = (_cmd(c) for c in (b"CNXN", b"OPEN", b"OKAY", b"WRTE", b"CLSE", b"AUTH"))


def pack(cmd: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    return HEADER.pack(cmd, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, cmd ^ 0xFFFFFFFF) + data


class _Stream:
    def __init__(self, conn: _Connection, local_id: int, remote_id: int) -> None:
        self.conn, self.local_id, self.remote_id = conn, local_id, remote_id
        self.okay = threading.Event()
        self.closed = threading.Event()
        self.inbox: queue.Queue[bytes | None] = queue.Queue()

    def write(self, data: bytes) -> None:
        """WRTE in chunks the host accepts, each waiting for its OKAY (ADB's flow control)."""
        for i in range(0, len(data), self.conn.host_maxdata):
            if self.closed.is_set():
                raise ConnectionError("stream closed by host")
            self.okay.clear()
            self.conn.send(WRTE, self.local_id, self.remote_id, data[i:i + self.conn.host_maxdata])
            while not self.okay.wait(0.2):
                if self.closed.is_set() or self.conn.dead.is_set():
                    raise ConnectionError("stream closed while waiting for OKAY")

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.conn.send(CLSE, self.local_id, self.remote_id)
        self.inbox.put(None)

    def read_exact(self, buf: bytearray, n: int) -> bytes:
        while len(buf) < n:
            chunk = self.inbox.get()
            if chunk is None:
                raise ConnectionError("stream closed mid sync request")
            buf += chunk
        out = bytes(buf[:n])
        del buf[:n]
        return out


class _Connection:
    def __init__(self, phone: LoopbackPhone, sock: socket.socket) -> None:
        self.phone, self.sock = phone, sock
        self.lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.host_maxdata = 4096
        self.dead = threading.Event()

    def send(self, cmd: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        with self.lock:
            try:
                self.sock.sendall(pack(cmd, arg0, arg1, data))
            except OSError:
                self.dead.set()

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("host closed the connection")
            buf += chunk
        return buf

    def serve(self) -> None:
        try:
            while True:
                cmd, arg0, arg1, length, check, magic = HEADER.unpack(self._recv_exact(HEADER.size))
                if magic != cmd ^ 0xFFFFFFFF:
                    raise ConnectionError(f"bad magic in header {cmd:#x}")
                data = self._recv_exact(length) if length else b""
                if check and sum(data) & 0xFFFFFFFF != check:
                    raise ConnectionError("bad checksum")
                self.phone.log.append(cmd.to_bytes(4, "little").decode("latin-1"))
                self._dispatch(cmd, arg0, arg1, data)
        except (ConnectionError, OSError, struct.error):
            pass
        finally:
            self.dead.set()
            for s in list(self.streams.values()):
                s.closed.set()
                s.inbox.put(None)
            with contextlib.suppress(OSError):
                self.sock.close()

    def _dispatch(self, cmd: int, arg0: int, arg1: int, data: bytes) -> None:
        if cmd == CNXN:
            self.host_maxdata = max(4096, min(arg1, MAXDATA))
            props = ";".join(f"{k}={PROPS[k]}" for k in ("ro.product.name", "ro.product.model", "ro.product.device")
                             if k in PROPS)
            self.send(CNXN, VERSION, MAXDATA, f"device::{props};features=cmd".encode())
        elif cmd == AUTH:
            # A host that insists on AUTH before our CNXN arrived: answer with CNXN (no key check).
            self.send(CNXN, VERSION, MAXDATA, b"device::features=cmd")
        elif cmd == OPEN:
            local_id = self.next_id
            self.next_id += 1
            stream = _Stream(self, local_id, arg0)
            self.streams[local_id] = stream
            self.send(OKAY, local_id, arg0)
            service = data.rstrip(b"\0").decode("utf-8", "replace")
            threading.Thread(target=self.phone._service, args=(stream, service), daemon=True).start()
        elif cmd == OKAY:
            s = self.streams.get(arg1)
            if s:
                s.okay.set()
        elif cmd == WRTE:
            s = self.streams.get(arg1)
            if s is None:
                self.send(CLSE, 0, arg0)
                return
            s.inbox.put(data)
            self.send(OKAY, s.local_id, s.remote_id)
        elif cmd == CLSE:
            s = self.streams.pop(arg1, None)
            if s is not None:
                # The host closed first: acknowledge with our CLSE, as adbd does (adb-shell waits for it).
                if not s.closed.is_set():
                    s.closed.set()
                    self.send(CLSE, s.local_id, s.remote_id)
                s.inbox.put(None)


class LoopbackPhone:
    """``with LoopbackPhone(tmp_path) as phone: phone.port`` — adbd on 127.0.0.1:``phone.port``."""

    def __init__(self, root: str | Path, port: int = 0) -> None:
        self.root = Path(root)
        self.tmp = self.root / "data" / "local" / "tmp"
        self.log: list[str] = []
        self.shell_commands: list[str] = []
        self.disconnect_on: str | None = None  # a shell command containing this drops the connection
        self._conns: list[_Connection] = []
        self._setup()
        self._srv = socket.create_server(("127.0.0.1", port))
        self.port = self._srv.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _setup(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        (self.root / "system" / "bin").mkdir(parents=True, exist_ok=True)
        (self.root / "system" / "build.prop.list").write_text("".join(f"[{k}]: [{v}]\n" for k, v in PROPS.items()))
        gp = self.root / "system" / "bin" / "getprop"
        gp.write_text(GETPROP_SH)
        gp.chmod(0o755)
        cpu = self.root / "sys" / "devices" / "system" / "cpu"
        (cpu / "cpu0" / "cpufreq").mkdir(parents=True, exist_ok=True)
        (cpu / "cpu0" / "cpufreq" / "scaling_governor").write_text("schedutil\n")
        (cpu / "possible").write_text("0-7\n")
        self.set_temperature(31.2)

    def set_temperature(self, celsius: float) -> None:
        bat = self.root / "sys" / "class" / "power_supply" / "battery"
        bat.mkdir(parents=True, exist_ok=True)
        (bat / "temp").write_text(f"{round(celsius * 10)}\n")
        for i, off in enumerate((0.0, 2.5)):
            z = self.root / "sys" / "class" / "thermal" / f"thermal_zone{i}"
            z.mkdir(parents=True, exist_ok=True)
            (z / "temp").write_text(f"{round((celsius + off - 2.5) * 1000)}\n")

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LoopbackPhone:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._srv.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            self._conns.append(conn)
            threading.Thread(target=conn.serve, daemon=True).start()

    def disconnect_all(self) -> None:
        """Pull the cable: every open connection drops."""
        for c in list(self._conns):  # a snapshot: reconnections after the pull stay up
            with contextlib.suppress(OSError):
                c.sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._srv.close()
        self.disconnect_all()

    def __enter__(self) -> LoopbackPhone:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the phone's side ----------------------------------------------------------------------
    def local_path(self, remote: str) -> Path:
        return Path(self.map_paths(remote))

    def map_paths(self, text: str) -> str:
        root = str(self.root)
        return re.sub(r"(?<![\w.])(/data/local/tmp|/sys/)", lambda m: root + m.group(1), text)

    def _service(self, stream: _Stream, service: str) -> None:
        try:
            if service.startswith("shell:"):
                self._shell(stream, service[len("shell:"):])
            elif service.startswith("sync:"):
                self._sync(stream)
        except (ConnectionError, OSError):
            pass
        finally:
            stream.close()

    def _shell(self, stream: _Stream, command: str) -> None:
        self.shell_commands.append(command)
        if self.disconnect_on and self.disconnect_on in command:
            self.disconnect_all()
            return
        if not command.strip():
            stream.write(b"interactive shell is not supported by the loopback phone\n")
            return
        env = dict(os.environ, PATH=f"{self.root / 'system' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        proc = subprocess.Popen(["/bin/sh", "-c", self.map_paths(command)], cwd=self.root, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        try:
            while True:
                chunk = proc.stdout.read1(65536)
                if not chunk:
                    break
                stream.write(chunk)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def _sync(self, stream: _Stream) -> None:
        buf = bytearray()
        while True:
            ident, length = SYNC_HDR.unpack(stream.read_exact(buf, SYNC_HDR.size))
            if ident == b"QUIT":
                return
            arg = stream.read_exact(buf, length)
            if ident == b"STAT":
                p = self.local_path(arg.decode())
                try:
                    st = p.stat()
                    stream.write(b"STAT" + struct.pack("<3I", st.st_mode, st.st_size & 0xFFFFFFFF,
                                                       int(st.st_mtime)))
                except OSError:
                    stream.write(b"STAT" + struct.pack("<3I", 0, 0, 0))
            elif ident == b"LIST":
                d = self.local_path(arg.decode())
                out = b""
                for entry in sorted(d.iterdir()) if d.is_dir() else []:
                    st = entry.stat()
                    name = entry.name.encode()
                    out += b"DENT" + struct.pack("<4I", st.st_mode, st.st_size, int(st.st_mtime), len(name)) + name
                stream.write(out + b"DONE" + struct.pack("<4I", 0, 0, 0, 0))
            elif ident == b"SEND":
                self._recv_file(stream, buf, arg.decode())
            elif ident == b"RECV":
                self._send_file(stream, arg.decode())
            else:
                stream.write(b"FAIL" + struct.pack("<I", 22) + b"unknown sync command")
                return

    def _recv_file(self, stream: _Stream, buf: bytearray, spec: str) -> None:
        remote, _, mode_s = spec.rpartition(",")
        mode = int(mode_s) if mode_s.isdigit() else 0o644
        target = self.local_path(remote)
        data = bytearray()
        while True:
            ident, length = SYNC_HDR.unpack(stream.read_exact(buf, SYNC_HDR.size))
            if ident == b"DATA":
                data += stream.read_exact(buf, length)
            elif ident == b"DONE":
                break  # length is the mtime
            else:
                raise ConnectionError(f"unexpected {ident!r} during SEND")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(stat.S_IMODE(mode) or 0o644)
            stream.write(b"OKAY" + struct.pack("<I", 0))
        except OSError as exc:
            msg = f"{remote}: {exc.strerror}".encode()
            stream.write(b"FAIL" + struct.pack("<I", len(msg)) + msg)

    def _send_file(self, stream: _Stream, remote: str) -> None:
        p = self.local_path(remote)
        try:
            data = p.read_bytes()
        except OSError as exc:
            msg = f"remote object '{remote}' does not exist ({exc.strerror})".encode()
            stream.write(b"FAIL" + struct.pack("<I", len(msg)) + msg)
            return
        out = bytearray()
        for i in range(0, len(data), 64 * 1024):
            chunk = data[i:i + 64 * 1024]
            out += b"DATA" + struct.pack("<I", len(chunk)) + chunk
        stream.write(bytes(out) + b"DONE" + struct.pack("<I", 0))


def adb_binary() -> str | None:
    return shutil.which("adb")
