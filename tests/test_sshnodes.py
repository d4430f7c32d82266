"""The SSH test nodes themselves: real sshd, ssh and rsync, shown to work and shown to refuse.

These prove the infrastructure that the fleet-distribution tests stand on: a command and an rsync
reach a node, an unknown host key or a foreign client key is refused, many connections are served
at once, stopping leaves no process behind, and a node in a network namespace can be cut off
mid-transfer and resumed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sshnodes import (
    ClientKey,
    NetnsSshNode,
    SshNode,
    SshNodeFactory,
    is_gone,
    known_hosts_for,
    netns_ssh_nodes_fixture,
    netns_unusable_reason,
    ssh_client_key_fixture,
    ssh_nodes_fixture,
    sweep_stale,
    write_fleet_file,
)

_FIXTURES = (ssh_client_key_fixture, ssh_nodes_fixture, netns_ssh_nodes_fixture)  # found by pytest under their names

BIG_FILE_SIZE = 200 * 1024 * 1024


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below root."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _model_dir(root: Path) -> Path:
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "model.safetensors").write_bytes(os.urandom(3 * 1024 * 1024))
    (root / "config.json").write_text('{"hidden_size": 64}\n')
    (root / "name with spaces.txt").write_text("spaces survive rsync\n")
    return root


def _rsync(node: SshNode, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    argv = ["rsync", "-e", node.rsh(), *args]
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)


# -- a node serves -----------------------------------------------------------------------------------


def test_a_command_runs_on_the_node(ssh_nodes: SshNodeFactory) -> None:
    (node,) = ssh_nodes(1)

    result = node.run("echo", "hello from", "$(hostname)", "$((6 * 7))")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["hello", "from"] and result.stdout.split()[-1] == "42"
    assert node.run("exit 3").returncode == 3  # the remote status comes back, not ssh's own 255
    assert node.run("echo $HOME").stdout.strip() == str(node.home)  # a home of its own, not the tester's
    assert node.known_hosts.read_text().startswith(f"[127.0.0.1]:{node.port} ssh-ed25519 ")
    assert f"Accepted publickey for {node.user}" in node.log_file.read_text()  # -r keeps the session log


def test_rsync_copies_a_directory_to_the_node_and_back(ssh_nodes: SshNodeFactory, tmp_path: Path) -> None:
    (node,) = ssh_nodes(1)
    source = _model_dir(tmp_path / "run")

    pushed = _rsync(node, "-a", f"{source}/", node.remote(f"{node.models_root}/model/"))
    assert pushed.returncode == 0, pushed.stderr
    assert _tree(node.models_root / "model") == _tree(source)
    remote_sum = node.run("sha256sum", shlex.quote(f"{node.models_root}/model/checkpoints/model.safetensors"))
    assert remote_sum.stdout.split()[0] == _tree(source)["checkpoints/model.safetensors"]

    back = tmp_path / "back"
    pulled = _rsync(node, "-a", node.remote(f"{node.models_root}/model/"), f"{back}/")
    assert pulled.returncode == 0, pulled.stderr
    assert _tree(back) == _tree(source)


# -- a node refuses --------------------------------------------------------------------------------


def test_an_unknown_host_key_is_refused(ssh_nodes: SshNodeFactory, tmp_path: Path) -> None:
    node, other = ssh_nodes(2)
    # The other node's key filed under this node's address: a host that is not who it claims to be.
    impostor = tmp_path / "known_hosts_wrong"
    impostor.write_text(f"[{node.host}]:{node.port} {other.known_hosts.read_text().split(maxsplit=1)[1]}")
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")

    for known_hosts in (impostor, empty):
        argv = [arg.replace(str(node.known_hosts), str(known_hosts)) for arg in node.ssh_argv("true")]
        result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
        assert result.returncode == 255
        assert "Host key verification failed" in result.stderr
    assert node.run("true").returncode == 0  # its own known_hosts still works


def test_a_client_key_not_in_authorized_keys_is_refused(ssh_nodes: SshNodeFactory, tmp_path: Path) -> None:
    (node,) = ssh_nodes(1)
    stranger = ClientKey.generate(tmp_path / "stranger_ed25519")
    argv = [arg.replace(str(node.identity_file), str(stranger.identity_file)) for arg in node.ssh_argv("true")]

    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)

    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr
    assert node.run("true").returncode == 0


# -- many at once ------------------------------------------------------------------------------------


def test_three_nodes_each_hold_twenty_simultaneous_connections(ssh_nodes: SshNodeFactory) -> None:
    nodes = ssh_nodes(3)
    per_node = 20
    # Each session checks in, then waits until all of its node's sessions have: success proves that
    # twenty were open at the same moment, not merely served one after another.
    script = textwrap.dedent(
        """\
        touch {dir}/$1; n=0
        while :; do
            set -- {dir}/*; [ $# -lt {count} ] || break  # builtins: 60 polling shells, 2 cores
            n=$((n + 1)); [ $n -lt 300 ] || exit 3; sleep 0.2
        done
        echo together"""
    )

    def connect(node: SshNode, index: int) -> subprocess.CompletedProcess[str]:
        barrier = node.models_root / "barrier"
        body = script.format(dir=shlex.quote(str(barrier)), count=per_node)
        return node.run("mkdir", "-p", shlex.quote(str(barrier)), "&&", "sh", "-c", shlex.quote(body), "sh", str(index))

    with ThreadPoolExecutor(max_workers=len(nodes) * per_node) as pool:
        futures = [pool.submit(connect, node, i) for node in nodes for i in range(per_node)]
        results = [future.result(timeout=90) for future in futures]

    failures = [r.stderr for r in results if r.returncode != 0 or r.stdout.strip() != "together"]
    assert not failures, failures[:3]


# -- stopping and restarting -----------------------------------------------------------------------


def test_stop_leaves_no_sshd_process_of_ours(ssh_nodes: SshNodeFactory) -> None:
    (node,) = ssh_nodes(1)
    # A session still running when the node stops: its sshd processes and its command must go too.
    client = subprocess.Popen(node.ssh_argv("sleep", "300"), stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while len(node.processes()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = node.processes()
        assert len(pids) >= 3, pids  # listener, the session's sshd(s), sleep

        node.stop()

        assert not node.running
        assert is_gone(node.pid)
        leftover = [pid for pid in pids if not is_gone(pid)]
        assert not leftover, leftover
        assert not _processes_mentioning(str(node.config_file))
        assert client.wait(10) == 255  # the client saw its connection end
    finally:
        client.kill()
        client.wait()


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_restart_keeps_the_port_and_the_host_key(ssh_nodes: SshNodeFactory) -> None:
    (node,) = ssh_nodes(1)
    port, pid, known_hosts = node.port, node.pid, node.known_hosts.read_text()

    node.restart()

    assert (node.port, node.known_hosts.read_text()) == (port, known_hosts)
    assert node.pid != pid and is_gone(pid)
    assert node.run("true").returncode == 0  # the old known_hosts accepts the restarted node


# -- fleet files -------------------------------------------------------------------------------------


def test_fleet_file_and_shared_known_hosts(ssh_nodes: SshNodeFactory, tmp_path: Path) -> None:
    nodes = ssh_nodes(2)
    shared = known_hosts_for(nodes)
    path = write_fleet_file(tmp_path, nodes, known_hosts=str(shared), labels={"rack": "a"})

    from ruamel.yaml import YAML

    document = YAML(typ="safe").load(path.read_text())
    assert path.name == "fleet.yaml"
    assert [entry["name"] for entry in document["nodes"]] == [node.name for node in nodes]
    assert document["nodes"][1] == nodes[1].fleet_entry(known_hosts=str(shared), labels={"rack": "a"})
    assert len(shared.read_text().splitlines()) == 2
    for node in nodes:
        argv = [arg.replace(str(node.known_hosts), str(shared)) for arg in node.ssh_argv("true")]
        assert subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=30).returncode == 0

    fleet = pytest.importorskip("modelyard.distribute.fleet")
    parsed = fleet.load_fleet(path, tmp_path)
    assert [(n.host, n.port, n.models_root) for n in parsed.nodes] == [
        (n.host, n.port, str(n.models_root)) for n in nodes
    ]


# -- network namespaces --------------------------------------------------------------------------------


def test_a_netns_node_serves_from_its_own_namespace_and_can_be_cut(netns_ssh_nodes: SshNodeFactory) -> None:
    (node,) = netns_ssh_nodes(1)
    assert isinstance(node, NetnsSshNode)

    inside = node.run("ip", "-brief", "address", "show", "eth0")
    assert inside.returncode == 0, inside.stderr
    assert f"{node.host}/30" in inside.stdout
    assert node.known_hosts.read_text().startswith(f"[{node.host}]:{node.port} ")

    node.cut()
    refused = node.run("true")
    assert refused.returncode == 255
    # A new connection fails when the neighbour lookup gives up (about 3 s) or at ConnectTimeout.
    assert "No route to host" in refused.stderr or "timed out" in refused.stderr, refused.stderr

    node.reconnect()
    assert node.run("true").returncode == 0


@pytest.mark.slow
def test_rsync_cut_off_mid_transfer_resumes_after_reconnect(netns_ssh_nodes: SshNodeFactory, tmp_path: Path) -> None:
    (node,) = netns_ssh_nodes(1)
    assert isinstance(node, NetnsSshNode)
    big = tmp_path / "big.bin"
    with big.open("wb") as handle:
        for _ in range(BIG_FILE_SIZE // (8 << 20)):
            handle.write(os.urandom(8 << 20))  # incompressible: what arrives is what was sent
    target = node.models_root / "big.bin"
    rsync = ["rsync", "-a", "--partial", "--timeout=5", "-e", node.rsh()]

    # Throttled so that the cut surely lands mid-file (unthrottled, the veth moves 200 MB in about a second).
    first = subprocess.Popen(
        [*rsync, "--bwlimit=20000", str(big), node.remote(f"{node.models_root}/")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _wait_for_partial(node.models_root, "big.bin", 40 << 20, timeout=30), "no partial file grew"
        node.cut()
        _, stderr = first.communicate(timeout=40)
    finally:
        first.kill()
        first.wait()
    assert first.returncode != 0, "the first transfer should not survive the cut"
    assert "timeout" in stderr.lower() or first.returncode in (12, 30, 255), stderr

    node.reconnect()
    assert node.wait_idle(30), f"the cut-off session lingers: {node.processes()}"  # its rsync kept the partial
    partial = target.stat().st_size
    assert 0 < partial < BIG_FILE_SIZE

    second = subprocess.run(
        [*rsync, "--stats", str(big), node.remote(f"{node.models_root}/")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert second.returncode == 0, second.stderr
    literal = _stat_bytes(second.stdout, "Literal data")
    assert literal < BIG_FILE_SIZE, second.stdout  # only what the partial lacked crossed the link
    assert _stat_bytes(second.stdout, "Matched data") >= partial // 2
    assert _sha256(target) == _sha256(big)


def _wait_for_partial(directory: Path, name: str, size: int, timeout: float) -> bool:
    """rsync writes into `.NAME.XXXXXX` beside the destination until the file is complete."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for temp in directory.glob(f".{name}.*"):
            try:
                if temp.stat().st_size >= size:
                    return True
            except FileNotFoundError:
                continue
        time.sleep(0.05)
    return False


def _stat_bytes(stats: str, label: str) -> int:
    match = re.search(rf"{label}: ([\d,]+) bytes", stats)
    assert match, stats
    return int(match[1].replace(",", ""))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# -- cleanup after a killed run ------------------------------------------------------------------------

_KILLED_RUN = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import sshnodes

key = sshnodes.ClientKey.generate(Path({root!r}) / "id_ed25519")
factory = sshnodes.SshNodeFactory(Path({root!r}) / "nodes", key, netns=True)
node = factory(1)[0]
print(node.namespace, node.host_interface, node.subnet, node.pid, flush=True)
time.sleep(300)
"""


@pytest.mark.root
@pytest.mark.skipif(netns_unusable_reason() is not None, reason=str(netns_unusable_reason()))
def test_a_killed_runs_namespace_and_sshd_are_swept(tmp_path: Path) -> None:
    script = _KILLED_RUN.format(tests=str(Path(__file__).parent), root=str(tmp_path))
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        namespace, interface, subnet, pid = run.stdout.readline().split()  # type: ignore[union-attr]
    finally:
        run.kill()  # SIGKILL: no teardown runs, as when CI or a person kills pytest
        run.wait()
    assert not is_gone(int(pid)), "the killed run's sshd should outlive it"

    import sshnodes

    sshnodes._swept = False  # a fresh test process would sweep on its first node
    sweep_stale()

    assert _wait(lambda: is_gone(int(pid)), 5)
    assert namespace not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert subprocess.run(["ip", "link", "show", interface], capture_output=True).returncode != 0
    assert subnet not in subprocess.run(["ip", "route"], capture_output=True, text=True).stdout


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
