"""A small ADB client over the ``adb-shell`` package: connect, shell, push, pull, facts, temperature.

No adb server is involved: we speak to adbd directly (TCP ``HOST:PORT``, or USB by serial when
``libusb1`` is installed). Every adb-shell or socket failure becomes :class:`PhoneError`, so the
agent can fail the job and reconnect.
"""

from __future__ import annotations

import os
import shlex
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from budgetnas.core.errors import BudgetNASError, MissingExtraError
from budgetnas.device_agents.adb.parse import device_facts, parse_getprop, parse_temperatures

REMOTE_DIR = "/data/local/tmp"
# Battery (tenths of °C) first, then every thermal zone (millidegrees); we wait on the hottest.
TEMPERATURE_CMD = ("cat /sys/class/power_supply/battery/temp /sys/class/thermal/thermal_zone*/temp 2>/dev/null;"
                   " true")
GOVERNOR_CMD = "cat /sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor 2>/dev/null; true"


class PhoneError(BudgetNASError):
    """The phone is unreachable, disconnected mid-command, or refused a transfer."""


def _adb_errors() -> tuple[type[BaseException], ...]:
    from adb_shell import exceptions as ex

    return (OSError, ex.AdbConnectionError, ex.AdbTimeoutError, ex.InvalidChecksumError,
            ex.InvalidCommandError, ex.InvalidResponseError, ex.PushFailedError, ex.AdbCommandFailureException,
            ex.TcpTimeoutException, ex.UsbReadFailedError)


class AdbClient:
    """One phone. ``target`` is ``HOST:PORT`` (adbd over TCP) or a USB serial number."""

    def __init__(self, target: str, timeout_s: float = 10.0, key_path: str | None = None) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.key_path = key_path or os.path.expanduser("~/.android/adbkey")
        self._dev: Any = None

    # ---- connection ------------------------------------------------------------------------
    @property
    def is_tcp(self) -> bool:
        host, sep, port = self.target.rpartition(":")
        return bool(sep and host and port.isdigit())

    def connect(self) -> None:
        from adb_shell.adb_device import AdbDevice

        self.close()
        if self.is_tcp:
            host, _, port = self.target.rpartition(":")
            dev: Any = AdbDevice(_tcp_transport(host, int(port)), default_transport_timeout_s=self.timeout_s)
        else:
            try:
                from adb_shell.adb_device import AdbDeviceUsb

                dev = AdbDeviceUsb(serial=self.target, default_transport_timeout_s=self.timeout_s)
            except (ImportError, AttributeError) as exc:
                raise MissingExtraError(
                    f"adb over USB needs libusb1 (pip install 'adb-shell[usb]'); or use HOST:PORT ({exc})") from None
        try:
            dev.connect(rsa_keys=self._signers(), auth_timeout_s=30.0, transport_timeout_s=self.timeout_s)
        except _adb_errors() as exc:
            raise PhoneError(f"cannot connect to phone {self.target}: {exc}") from None
        self._dev = dev

    def _signers(self) -> list[Any] | None:
        """The user's adb key (``~/.android/adbkey``), so an already-authorised phone accepts us."""
        if not os.path.exists(self.key_path):
            return None
        try:
            from adb_shell.auth.sign_pythonrsa import PythonRSASigner

            return [PythonRSASigner.FromRSAKeyPath(self.key_path)]
        except Exception:  # a broken key file must not stop keyless (emulator, loopback) phones
            return None

    def close(self) -> None:
        if self._dev is not None:
            try:
                self._dev.close()
            except _adb_errors():
                pass
            self._dev = None

    def _device(self) -> Any:
        if self._dev is None:
            self.connect()
        return self._dev

    def _call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        try:
            return fn(self._device())
        except _adb_errors() as exc:
            self.close()  # the transport is in an unknown state; the next call reconnects
            raise PhoneError(f"phone {self.target}: {what} failed: {type(exc).__name__}: {exc}") from None

    # ---- commands --------------------------------------------------------------------------
    def shell(self, command: str, timeout_s: float | None = None) -> str:
        """Run ``command`` with ``sh -c`` on the phone; stdout and stderr together (adb ``shell:`` v1)."""
        read_timeout = timeout_s if timeout_s is not None else max(self.timeout_s, 10.0)
        out = self._call(f"shell {command[:60]!r}", lambda d: d.shell(
            command, read_timeout_s=read_timeout, timeout_s=timeout_s, decode=False))
        return bytes(out).decode("utf-8", "replace")

    def push(self, local: str | Path, remote: str, mode: int = 0o755) -> None:
        import stat as st

        size = Path(local).stat().st_size
        self._call(f"push {local} -> {remote}", lambda d: d.push(
            str(local), remote, st_mode=st.S_IFREG | mode, mtime=int(time.time()),
            read_timeout_s=max(self.timeout_s, 10.0 + size / 1e6)))

    def pull(self, remote: str, local: str | Path) -> None:
        self._call(f"pull {remote}", lambda d: d.pull(remote, str(local), read_timeout_s=max(self.timeout_s, 30.0)))

    def stat(self, remote: str) -> tuple[int, int, int]:
        """(mode, size, mtime) of a remote path; mode 0 when it does not exist."""
        return tuple(self._call(f"stat {remote}", lambda d: d.stat(remote)))  # type: ignore[return-value]

    def ensure_file(self, local: str | Path, remote: str, mode: int = 0o755) -> bool:
        """Push ``local`` unless the phone already holds a file of the same size; True if pushed."""
        _, size, _ = self.stat(remote)
        if size == Path(local).stat().st_size:
            return False
        self.push(local, remote, mode)
        return True

    # ---- facts ---------------------------------------------------------------------------
    def getprop(self) -> dict[str, str]:
        return parse_getprop(self.shell("getprop"))

    def facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = dict(device_facts(self.getprop()))
        facts["adb"] = self.target
        facts["governor"] = self.governor()
        facts["cpus"] = self.cpu_count()
        return facts

    def governor(self, cpu: int = 0) -> str:
        return self.shell(GOVERNOR_CMD.format(cpu=int(cpu))).strip() or "unknown"

    def cpu_count(self) -> int | None:
        out = self.shell("cat /sys/devices/system/cpu/possible 2>/dev/null; true").strip()
        # "0-7" or "0-3,4-7"
        try:
            return sum(int(b) - int(a) + 1 for a, _, b in (r.partition("-") if "-" in r else (r, "", r)
                                                             for r in out.split(",")))
        except ValueError:
            return None

    def temperature(self) -> float | None:
        """The hottest battery or thermal-zone reading in °C, or None when the phone exposes none."""
        temps = parse_temperatures(self.shell(TEMPERATURE_CMD))
        return max(temps) if temps else None

    def wait_cool(self, below_c: float, max_wait_s: float = 300.0, poll_s: float = 5.0,
                  sleep: Callable[[float], None] = time.sleep) -> float | None:
        """Block until the phone is cooler than ``below_c`` (or ``max_wait_s`` passed); the last reading."""
        deadline = time.monotonic() + max_wait_s
        t = self.temperature()
        while t is not None and t >= below_c and time.monotonic() < deadline:
            sleep(poll_s)
            t = self.temperature()
        return t


def _tcp_transport(host: str, port: int) -> Any:
    """adb-shell's TCP transport with two fixes: TCP_NODELAY, and a closed socket raises at once."""
    from adb_shell.transport.tcp_transport import TcpTransport

    class Transport(TcpTransport):  # type: ignore[misc]
        def connect(self, transport_timeout_s: float | None) -> None:
            super().connect(transport_timeout_s)
            # adb-shell leaves Nagle on: every small WRTE/OKAY then waits for an ACK (6 s per 300 KB push).
            self._connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
            data: bytes = super().bulk_read(numbytes, transport_timeout_s)
            if not data:
                # adb-shell would poll an EOF socket until its read timeout (minutes during a benchmark run)
                raise ConnectionResetError(f"phone {self._host}:{self._port} closed the connection")
            return data

    return Transport(host, port)


def quote(*args: str | int | float) -> str:
    return " ".join(shlex.quote(str(a)) for a in args)
