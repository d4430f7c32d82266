"""Real SSH nodes for the fleet-distribution tests: a real `sshd` per node, reached with real `ssh`
and `rsync`, never mocks.

A loopback node is an sshd on 127.0.0.1 at a free port, with its own host key, accepting the test
session's one client key. A netns node is an sshd inside its own network namespace, reached over a
veth pair in a private /30, so that a test can cut its link mid-transfer and reconnect it.

    def test_copy(ssh_nodes):
        (node,) = ssh_nodes(1)
        node.run("true").check_returncode()

Every node is stopped at the end of its test by process id (the machine may run other sshds), its
namespace removed even when the test fails; what a killed earlier run left behind (sshds, namespaces,
routes) is found through state files and removed when the next run starts its first node.

Seen on these machines: PID 1 reaps orphans only every second or two, so a node's processes are
killed leaves first while their parents still live to reap them; bringing the host side of a veth
down removes its route, and the address then routes to the default gateway (and something there
answers), so a cut takes the namespace side down and a blackhole route backs every /30.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import ipaddress
import itertools
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SSHD = "/usr/sbin/sshd"
LOOPBACK = "127.0.0.1"
READY_TIMEOUT = 15.0  # seconds for a fresh sshd to complete a real handshake
STOP_TIMEOUT = 5.0
NETNS_PREFIX = "myard"  # namespaces myard-<owner pid>-<index>, host interfaces myard<index>
NETNS_SUPERNET = ipaddress.IPv4Network("10.249.0.0/16")  # one /30 per netns node
NETNS_PORT = 2222  # not 22: known_hosts then always takes the `[host]:port` form
NETNS_INTERFACE = "eth0"  # the node's side of the veth, inside its namespace
# Marks the fallback route that keeps a namespace's /30 off the default gateway (see module docstring).
BLACKHOLE_METRIC = 4249
NEEDED_TOOLS = ("ssh", "ssh-keygen", "rsync")


# -- small process helpers ----------------------------------------------------------------------


def _run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """A local command whose failure says what it printed."""
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces): state is [0], ppid [1]."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks: with the pid, it names one process (pids are reused)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_alive(pid: int) -> bool:
    """Running: a zombie has ended and only waits for its parent (or PID 1) to reap it."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def is_gone(pid: int) -> bool:
    return _stat_fields(pid) is None


def _descendants(root: int) -> dict[int, int]:
    """Every process below `root`, with its depth (1 for a child)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    depths: dict[int, int] = {}
    frontier = [(root, 0)]
    while frontier:
        pid, depth = frontier.pop()
        for child in children.get(pid, []):
            depths[child] = depth + 1
            frontier.append((child, depth + 1))
    return depths


def _wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def kill_tree(root: int, *, include_root: bool = True) -> None:
    """Kill `root`'s processes by pid, deepest first: each dies while its parent still lives to
    reap it (PID 1 here reaps orphans only every second or two, leaving zombies until then)."""
    for _ in range(10):  # a process may fork while we work; a few rounds catch its children
        tree = _descendants(root)
        if not tree:
            break
        for depth in sorted(set(tree.values()), reverse=True):
            level = [pid for pid, d in tree.items() if d == depth]
            for pid in level:
                _signal(pid, signal.SIGKILL)
            _wait_until(functools.partial(_all_gone, level), 2.0)
    if include_root:
        _signal(root, signal.SIGKILL)


def _all_gone(pids: Iterable[int]) -> bool:
    return all(is_gone(pid) for pid in pids)


def _none_alive(pids: Iterable[int]) -> bool:
    return not any(is_alive(pid) for pid in pids)


def _pid_record(pid: int) -> list[int]:
    return [pid, process_start(pid) or 0]


def _same_process(record: list[int] | None) -> bool:
    """A recorded [pid, start] still names a live process (not a reuse of its pid)."""
    if not record:
        return False
    pid, start = record
    return is_alive(pid) and process_start(pid) == start


# -- state of this machine's nodes, to clean up after killed runs -------------------------------------


def state_dir() -> Path:
    """Where each node records its sshd and network resources while it lives."""
    base = Path("/run") if os.geteuid() == 0 else Path(tempfile.gettempdir())
    suffix = "" if os.geteuid() == 0 else f"-{os.geteuid()}"
    path = base / f"modelyard-sshnodes{suffix}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


@contextlib.contextmanager
def _state_lock() -> Iterator[Path]:
    """Serialises allocation and sweeping between test processes on one machine."""
    directory = state_dir()
    with (directory / "lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield directory
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_records(directory: Path) -> dict[Path, dict[str, Any]]:
    records: dict[Path, dict[str, Any]] = {}
    for path in directory.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            records[path] = json.loads(path.read_text())
    return records


_swept = False


def sweep_stale() -> None:
    """Remove what runs whose test process is gone left behind: their sshds (by recorded pid),
    namespaces, veths and routes. Once per test process; nodes of live runs are left alone."""
    global _swept
    if _swept:
        return
    with _state_lock() as directory:
        for path, record in _read_records(directory).items():
            if not _same_process(record.get("owner")):
                _release(record)
                path.unlink(missing_ok=True)
        if os.geteuid() == 0 and shutil.which("ip"):
            _sweep_unrecorded_namespaces(directory)
    _swept = True


def _sweep_unrecorded_namespaces(directory: Path) -> None:
    """Namespaces of ours without a record (a run killed between two steps) whose owner is gone."""
    recorded = {record.get("namespace") for record in _read_records(directory).values()}
    listing = _run("ip", "netns", "list", check=False).stdout
    for name in (line.split()[0] for line in listing.splitlines() if line.strip()):
        match = re.fullmatch(rf"{NETNS_PREFIX}-(\d+)-(\d+)", name)
        if match and name not in recorded and not is_alive(int(match[1])):
            _release({"namespace": name, "host_interface": f"{NETNS_PREFIX}{match[2]}"})


def _release(record: Mapping[str, Any]) -> None:
    """Undo one node's resources; each step tolerates what is already gone."""
    if _same_process(record.get("sshd")):
        kill_tree(record["sshd"][0])
    namespace = record.get("namespace")
    if namespace:
        _kill_namespace_processes(namespace)
        _run("ip", "netns", "delete", namespace, check=False)
    if record.get("host_interface"):
        _run("ip", "link", "delete", record["host_interface"], check=False)
    if record.get("subnet"):
        _run("ip", "route", "delete", "blackhole", record["subnet"], "metric", str(BLACKHOLE_METRIC), check=False)


def _kill_namespace_processes(namespace: str) -> None:
    """Anything still running in the namespace keeps it alive after `ip netns delete`."""
    for _ in range(3):
        pids = [int(p) for p in _run("ip", "netns", "pids", namespace, check=False).stdout.split()]
        if not pids:
            return
        for pid in pids:
            kill_tree(pid)
        _wait_until(functools.partial(_none_alive, pids), 2.0)


# -- keys ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientKey:
    """An ed25519 client key pair without a passphrase."""

    identity_file: Path

    @property
    def public_key(self) -> str:
        return Path(f"{self.identity_file}.pub").read_text().strip()

    @classmethod
    def generate(cls, path: Path, comment: str = "modelyard-tests") -> ClientKey:
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
        return cls(path)


def _host_key_line(public_key_file: Path) -> str:
    """`ssh-ed25519 AAAA...`: the key without its comment, as known_hosts holds it."""
    return " ".join(public_key_file.read_text().split()[:2])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


@functools.cache
def _sshd_version() -> tuple[int, int]:
    text = _run(SSHD, "-V", check=False).stderr
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else (0, 0)


# -- nodes -----------------------------------------------------------------------------------------


class NodeStartError(RuntimeError):
    """sshd did not come up; the message ends with its log."""


class SshNode:
    """A running sshd on 127.0.0.1 at its own port with its own host key, accepting one client key.

    Commands given to `ssh_argv`/`run` are joined by ssh with spaces and run by the node's shell,
    exactly as `ssh host a b c` does: quote with `shlex.join` for arguments holding spaces.
    """

    node_type = "inference"

    def __init__(self, name: str, directory: Path, client_key: ClientKey, *, host: str = LOOPBACK) -> None:
        self.name = name
        self.directory = directory
        self.host = host
        self.port = 0
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.identity_file = client_key.identity_file
        self.client_key = client_key
        self.known_hosts = directory / "known_hosts"
        self.models_root = directory / "models"
        self.home = directory / "home"  # $HOME of the node's sessions (see sshd_config)
        self.host_key = directory / "ssh_host_ed25519_key"
        self.config_file = directory / "sshd_config"
        self.log_file = directory / "sshd.log"
        self.pid = 0  # the sshd listener's pid; kept after stop() to check that it is gone
        self._process: subprocess.Popen[bytes] | None = None
        self._record = state_dir() / f"{self.record_name}.json"
        directory.mkdir(parents=True)
        self.models_root.mkdir()
        self.home.mkdir()

    @property
    def record_name(self) -> str:
        return f"{os.getpid()}-{self.directory.name}-{hashlib.sha1(str(self.directory).encode()).hexdigest()[:8]}"

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Launch sshd (host key and port chosen at the first start, kept after) and await a real handshake."""
        if not self.host_key.exists():
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.name, "-f", str(self.host_key))
            (self.directory / "authorized_keys").write_text(self.client_key.public_key + "\n")
        fresh_port = not self.port
        for attempt in range(3):
            if fresh_port:
                self.port = self._choose_port()
            self.config_file.write_text(self.sshd_config())
            self.known_hosts.write_text(f"[{self.host}]:{self.port} {_host_key_line(Path(f'{self.host_key}.pub'))}\n")
            try:
                self._launch()
                self._wait_ready()
                return
            except NodeStartError as exc:
                self.stop()
                # A free port can be taken between our probe and sshd's bind: then another port, twice at most.
                if not fresh_port or attempt == 2 or "Address already in use" not in str(exc):
                    raise

    def _choose_port(self) -> int:
        return _free_port()

    def sshd_config(self) -> str:
        lines = [
            f"ListenAddress {self.host}:{self.port}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.directory / 'authorized_keys'}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",  # the node's files live in tmp directories of loose modes
            "PermitRootLogin prohibit-password",
            f"PidFile {self.directory / 'sshd.pid'}",
            "LogLevel VERBOSE",
            "MaxStartups 100",  # the tests open many connections at once
            "MaxSessions 100",
            # The post-quantum default (sntrup761) costs ~0.16 s of CPU per handshake, and these machines
            # have 2 cores: the tests open hundreds of connections. What the fleet tests check does not
            # depend on the key exchange.
            "KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org",
            # A home of the node's own: as on a separate machine, and bash (which sources ~/.bashrc for ssh
            # commands) skips root's, whose `pyenv init` costs 0.12 s on every command here.
            f"SetEnv HOME={self.home}",
        ]
        if _sshd_version() >= (9, 8):
            # 9.8 shuts out a source after failed logins; the refusal tests must not lock out the next test
            lines.append("PerSourcePenalties no")
        return "\n".join(lines) + "\n"

    def _sshd_argv(self) -> list[str]:
        # -D: a child of ours, stopped by its pid. -r: no re-exec; daemons were seen to reset every
        # connection without it on some of these machines (not this one), and a re-exec'd connection
        # drops -E, losing the per-connection log lines.
        return [SSHD, "-D", "-r", "-f", str(self.config_file), "-E", str(self.log_file)]

    def _launch(self) -> None:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        with (self.directory / "sshd.stderr").open("ab") as stderr:
            self._process = subprocess.Popen(
                # Same process group as the tests: a Ctrl-C or a CI kill of the group ends the sshds too.
                self._sshd_argv(),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        self.pid = self._process.pid
        self._write_record()

    def _wait_ready(self) -> None:
        """Until `ssh ... true` succeeds: a listening port is not yet a working sshd."""
        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise NodeStartError(f"sshd of {self.name} exited {self._process.returncode}\n{self.log_tail()}")
            probe = self.run("true", timeout=10)
            if probe.returncode == 0:
                return
            last = probe.stderr.strip()
            time.sleep(0.1)
        raise NodeStartError(
            f"sshd of {self.name} refused handshakes for {READY_TIMEOUT} s ({last})\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Kill the sshd and everything its sessions started, by pid (never by name)."""
        if self._process is None:
            return
        kill_tree(self.pid, include_root=False)  # sessions first, while the listener still reaps them
        self._process.terminate()
        try:
            self._process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(STOP_TIMEOUT)
        self._process = None
        self._write_record()

    def restart(self) -> None:
        """Stop, then start again at the same port with the same host key."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def processes(self) -> list[int]:
        """The pids of the node's sshd and of everything its sessions run."""
        if not self.running:
            return []
        return [self.pid, *_descendants(self.pid)]

    def wait_idle(self, timeout: float = 20.0) -> bool:
        """Until no session is left (a cut-off one ends only when its side times out)."""
        return _wait_until(lambda: len(self.processes()) <= 1, timeout, interval=0.1)

    def close(self) -> None:
        """Stop and forget: the end of the node's test."""
        try:
            self.stop()
        finally:
            self._record.unlink(missing_ok=True)

    def _write_record(self) -> None:
        record = {"owner": _pid_record(os.getpid()), "sshd": _pid_record(self.pid) if self.running else None}
        self._record.write_text(json.dumps({**record, **self._resources()}))

    def _resources(self) -> dict[str, Any]:
        return {}

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.directory / "sshd.stderr", self.log_file):
            if path.exists():
                text += f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    # -- reaching the node -----------------------------------------------------------------------

    def ssh_options(self) -> list[str]:
        """`ssh` with this node's key, port and known_hosts, before the destination."""
        return [
            "ssh",
            "-i",
            str(self.identity_file),
            "-p",
            str(self.port),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=5",
        ]

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    def ssh_argv(self, *command: str) -> list[str]:
        return [*self.ssh_options(), self.destination, *command]

    def rsh(self) -> str:
        """The ssh command for `rsync -e`."""
        return shlex.join(self.ssh_options())

    def remote(self, path: str | Path = "") -> str:
        """`user@host:path`, as rsync names a file on the node."""
        return f"{self.destination}:{path}"

    def run(self, *command: str, timeout: float = 30, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """A real ssh call; returns whatever it did (check `returncode`: 255 is ssh's own failure)."""
        return subprocess.run(
            self.ssh_argv(*command),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def fleet_entry(self, **overrides: Any) -> dict[str, Any]:
        """The node as an entry of a fleet file (`modelyard.distribute.fleet.Node`)."""
        entry: dict[str, Any] = {
            "name": self.name,
            "host": self.host,
            "user": self.user,
            "port": self.port,
            "identity_file": str(self.identity_file),
            "known_hosts": str(self.known_hosts),
            "models_root": str(self.models_root),
            "node_type": self.node_type,
            "labels": {},
        }
        return {**entry, **overrides}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.destination}:{self.port} pid={self.pid}>"


class NetnsSshNode(SshNode):
    """An sshd in its own network namespace, reached over a veth pair in a private /30: a node whose
    link can be cut (`cut()`) and brought back (`reconnect()`), as a machine cut off mid-transfer."""

    def __init__(self, name: str, directory: Path, client_key: ClientKey, *, index: int) -> None:
        self.index = index
        self.subnet = _subnet(index)
        gateway, address = list(self.subnet.hosts())
        self.gateway = str(gateway)  # this machine's end of the veth
        self.namespace = f"{NETNS_PREFIX}-{os.getpid()}-{index}"
        self.host_interface = f"{NETNS_PREFIX}{index}"
        self.network_ready = False
        super().__init__(name, directory, client_key, host=str(address))

    def _resources(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "host_interface": self.host_interface, "subnet": str(self.subnet)}

    def _choose_port(self) -> int:
        return NETNS_PORT  # the namespace has every port free

    def start(self) -> None:
        if not self.network_ready:
            self._write_record()  # before the first resource, so a killed run can be swept
            self._create_network()
        super().start()

    def _create_network(self) -> None:
        subnet, prefix = str(self.subnet), self.subnet.prefixlen
        # The blackhole first: whatever happens to the veth, the /30 never routes to the default gateway.
        _run("ip", "route", "add", "blackhole", subnet, "metric", str(BLACKHOLE_METRIC))
        _run("ip", "netns", "add", self.namespace)
        _run(
            "ip",
            "link",
            "add",
            self.host_interface,
            "type",
            "veth",
            "peer",
            "name",
            NETNS_INTERFACE,
            "netns",
            self.namespace,
        )
        _run("ip", "address", "add", f"{self.gateway}/{prefix}", "dev", self.host_interface)
        _run("ip", "link", "set", self.host_interface, "up")
        _run("ip", "-n", self.namespace, "address", "add", f"{self.host}/{prefix}", "dev", NETNS_INTERFACE)
        _run("ip", "-n", self.namespace, "link", "set", NETNS_INTERFACE, "up")
        _run("ip", "-n", self.namespace, "link", "set", "lo", "up")
        self.network_ready = True

    def _sshd_argv(self) -> list[str]:
        # `ip netns exec` execs sshd in place: the pid we get is sshd's.
        return ["ip", "netns", "exec", self.namespace, *super()._sshd_argv()]

    def processes(self) -> list[int]:
        """Everything in the namespace: a cut-off session may outlive its link."""
        listed = _run("ip", "netns", "pids", self.namespace, check=False).stdout.split()
        return [int(pid) for pid in listed if is_alive(int(pid))]

    def cut(self) -> None:
        """Take the link down from the node's side: packets to it are dropped, connections hang.
        (Downing the host side would delete the route and send the node's traffic to the gateway.)"""
        _run("ip", "-n", self.namespace, "link", "set", NETNS_INTERFACE, "down")
        self._check_contained()

    def reconnect(self) -> None:
        """Bring the link back and wait until the node answers a handshake again."""
        _run("ip", "-n", self.namespace, "link", "set", NETNS_INTERFACE, "up")
        if not _wait_until(self._has_carrier, 5.0):
            raise NodeStartError(f"the link of {self.name} ({self.host_interface}) did not come back up")
        self._wait_ready()

    def _has_carrier(self) -> bool:
        return Path(f"/sys/class/net/{self.host_interface}/operstate").read_text().strip() == "up"

    def _check_contained(self) -> None:
        """The node's address still routes to its veth (or its blackhole): never off this machine."""
        route = _run("ip", "-o", "route", "get", self.host, check=False)
        if route.returncode == 0 and f"dev {self.host_interface}" not in route.stdout:
            raise RuntimeError(f"{self.host} would leave this machine: {route.stdout.strip()}")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            _release(self._resources())
            self._record.unlink(missing_ok=True)


def _subnet(index: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network((int(NETNS_SUPERNET.network_address) + 4 * index, 30))


def _allocate_subnet_index(directory: Path) -> int:
    """The first /30 that no live node and no route of this machine uses (called under the lock)."""
    taken = {record["subnet"] for record in _read_records(directory).values() if record.get("subnet")}
    routes = [ipaddress.ip_network(r["dst"], strict=False) for r in _routes() if r.get("dst", "default") != "default"]
    for index, subnet in enumerate(NETNS_SUPERNET.subnets(new_prefix=30)):
        if str(subnet) not in taken and not any(subnet.overlaps(route) for route in routes):
            return index
    raise RuntimeError(f"no free /30 left in {NETNS_SUPERNET}")


def _routes() -> list[dict[str, Any]]:
    return list(json.loads(_run("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]"))


# -- availability --------------------------------------------------------------------------------------


def require_tools() -> None:
    """sshd, ssh and rsync are installed by scripts/ensure-services: their absence is an environment
    problem, reported loudly (a skip would hide it in CI)."""
    missing = [tool for tool in NEEDED_TOOLS if shutil.which(tool) is None]
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    if missing:
        pytest.fail(f"{', '.join(missing)} missing; run scripts/ensure-services")


def netns_unusable_reason() -> str | None:
    """Why netns nodes cannot run here, or None."""
    if os.geteuid() != 0:
        return "netns nodes need root (ip netns, veth pairs)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    probe = _run("ip", "netns", "list", check=False)
    return None if probe.returncode == 0 else f"ip netns is not usable here: {probe.stderr.strip()}"


# -- the fixtures ----------------------------------------------------------------------------------------


class SshNodeFactory:
    """`factory(count)`: start `count` independent nodes; `close()` stops every one it started."""

    def __init__(self, root: Path, client_key: ClientKey, *, netns: bool = False) -> None:
        self.root = root
        self.client_key = client_key
        self.netns = netns
        self.nodes: list[SshNode] = []
        self._serial = itertools.count(1)

    def __call__(self, count: int = 1, *, prefix: str | None = None) -> list[SshNode]:
        sweep_stale()
        started = [self._start_one(prefix or ("nsnode" if self.netns else "node")) for _ in range(count)]
        return started

    def _start_one(self, prefix: str) -> SshNode:
        name = f"{prefix}{next(self._serial)}"
        node = self._create(name, self.root / name)
        self.nodes.append(node)  # before start: a half-started node is cleaned up too
        try:
            node.start()
        except NodeStartError as exc:
            if os.geteuid() != 0:
                pytest.skip(f"sshd cannot serve this user here: {exc}")
            raise
        return node

    def _create(self, name: str, directory: Path) -> SshNode:
        if not self.netns:
            return SshNode(name, directory, self.client_key)
        with _state_lock() as state:
            index = _allocate_subnet_index(state)
            node = NetnsSshNode(name, directory, self.client_key, index=index)
            node._write_record()  # claims the /30 before the lock is released
        return node

    def close(self) -> None:
        """Stop every node even when one of them fails to stop; then report the first failure."""
        errors: list[BaseException] = []
        for node in reversed(self.nodes):
            try:
                node.close()
            except Exception as exc:
                errors.append(exc)
        self.nodes.clear()
        if errors:
            raise errors[0]


# The fixtures' functions carry a `_fixture` suffix and their fixture names by `name=`: importing them
# (into conftest.py or a test module) then shadows no test argument.


@pytest.fixture(scope="session", name="ssh_client_key")
def ssh_client_key_fixture(tmp_path_factory: pytest.TempPathFactory) -> ClientKey:
    """The ed25519 client key that every node of the test session accepts."""
    require_tools()
    return ClientKey.generate(tmp_path_factory.mktemp("ssh-client") / "id_ed25519")


@pytest.fixture(name="ssh_nodes")
def ssh_nodes_fixture(tmp_path: Path, ssh_client_key: ClientKey) -> Iterator[SshNodeFactory]:
    """`ssh_nodes(count) -> list[SshNode]`: loopback sshd nodes, all stopped at the end of the test."""
    factory = SshNodeFactory(tmp_path.resolve() / "sshnodes", ssh_client_key)
    yield factory
    factory.close()


# The param carries the `root` mark to every test using the fixture (`-m root` selects them, `-m "not root"`
# leaves them out) and its id puts `[netns]` in their names (`-k netns`).
@pytest.fixture(name="netns_ssh_nodes", params=[pytest.param("netns", marks=pytest.mark.root)])
def netns_ssh_nodes_fixture(tmp_path: Path, ssh_client_key: ClientKey) -> Iterator[SshNodeFactory]:
    """`netns_ssh_nodes(count) -> list[NetnsSshNode]`: nodes in their own network namespaces, with
    `cut()` and `reconnect()`; skipped where `ip netns` is not usable."""
    reason = netns_unusable_reason()
    if reason:
        pytest.skip(reason)
    factory = SshNodeFactory(tmp_path.resolve() / "netnsnodes", ssh_client_key, netns=True)
    yield factory
    factory.close()


# -- fleet files ------------------------------------------------------------------------------------------


def write_fleet_file(path: Path, nodes: Iterable[SshNode], **common: Any) -> Path:
    """A fleet file listing the nodes; `common` keys go into every entry. `path` may be a directory
    (the file is then `fleet.yaml` in it)."""
    from ruamel.yaml import YAML

    target = path / "fleet.yaml" if path.is_dir() else path
    target.parent.mkdir(parents=True, exist_ok=True)
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    with target.open("w") as handle:
        yaml.dump({"nodes": [node.fleet_entry(**common) for node in nodes]}, handle)
    return target


def known_hosts_for(nodes: Iterable[SshNode], path: Path | None = None) -> Path:
    """One known_hosts file with every node's host key (default: beside the nodes' directories)."""
    chosen = list(nodes)
    if not chosen:
        raise ValueError("known_hosts_for needs at least one node")
    if path is None:
        digest = hashlib.sha1(" ".join(node.name for node in chosen).encode()).hexdigest()[:10]
        path = chosen[0].directory.parent / f"known_hosts-{digest}"
    path.write_text("".join(node.known_hosts.read_text() for node in chosen))
    return path
