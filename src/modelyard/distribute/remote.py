"""Calling the node agent: ship `agent.py` over SSH, send a JSON request, read the JSON reply.

The agent's source travels with every call (`python3 -c`, compressed), so nothing is installed
on a node and a node can never run a stale agent. A node without python3 >= 3.11 gets the
`ShellAgent`: the same commands as POSIX shell with `openssl dgst -sha256` for digests (coreutils
sha256sum is several times slower on these CPUs); its load check says `skipped`, and a partial
repair needs python3.
"""

from __future__ import annotations

import base64
import functools
import json
import shlex
import zlib
from pathlib import Path
from typing import Any, Protocol

from modelyard.distribute.transport import Completed, NodeConnection
from modelyard.errors import RemoteError

AGENT_SOURCE = Path(__file__).with_name("agent.py")
NO_PYTHON = 127  # the shell's "command not found"
OLD_PYTHON = 86  # the bootstrap's exit status for a python3 older than 3.11


class AgentRefused(RemoteError):
    """The agent ran and refused the request (a full disk, a foreign directory at the serving
    path, a path outside the models root): the message is its reason."""


class Agent(Protocol):
    hasher: str

    def call(self, command: str, *, payload: bytes | None = None, timeout: float = 600, **fields: Any) -> Any: ...


@functools.cache
def bootstrap() -> str:
    """A `python3 -c` program that checks the version, then runs the compressed agent source."""
    packed = base64.b64encode(zlib.compress(AGENT_SOURCE.read_bytes(), 9)).decode("ascii")
    return (
        "import sys\n"
        f"if sys.version_info < (3, 11): sys.stderr.write('python3 >= 3.11 needed\\n'); sys.exit({OLD_PYTHON})\n"
        "import base64, zlib\n"
        f"exec(compile(zlib.decompress(base64.b64decode('{packed}')), 'modelyard-agent', 'exec'))\n"
    )


class PythonAgent:
    """The agent run by the node's python3."""

    def __init__(self, connection: NodeConnection, python: str) -> None:
        self.connection = connection
        self.python = python
        self.hasher = "python3 hashlib"

    def call(self, command: str, *, payload: bytes | None = None, timeout: float = 600, **fields: Any) -> Any:
        request = json.dumps({"command": command, **fields}).encode() + b"\n"
        completed = self.connection.check(
            self.connection.run([self.python, "-c", bootstrap()], input=request + (payload or b""), timeout=timeout),
            f"agent {command}",
        )
        return parse_reply(completed, self.connection.node.name, command)


def parse_reply(completed: Completed, node: str, command: str) -> Any:
    lines = [line for line in completed.stdout.decode("utf-8", "replace").splitlines() if line.strip()]
    try:
        reply = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        reply = None
    if not isinstance(reply, dict):
        raise RemoteError(
            f"node {node}: the agent's {command} gave no answer (exit {completed.returncode}): "
            f"{completed.tail(300) or 'no output'}"
        )
    if not reply.get("ok"):
        raise AgentRefused(f"node {node}: {reply.get('error')}")
    return reply["result"]


def open_agent(connection: NodeConnection) -> tuple[Agent, dict[str, Any]]:
    """The agent for this node and its probe answer. Raises RemoteError when the node cannot be
    reached at all (so the caller marks the node failed with ssh's reason)."""
    node = connection.node
    probe_request = {"root": node.models_root}
    python_agent = PythonAgent(connection, node.python)
    request = json.dumps({"command": "probe", **probe_request}).encode() + b"\n"
    completed = connection.check(connection.run([node.python, "-c", bootstrap()], input=request, timeout=60), "probe")
    if completed.returncode in (NO_PYTHON, OLD_PYTHON) or (
        completed.returncode != 0 and b"No such file" in completed.stderr
    ):
        shell_agent = ShellAgent(connection)
        probe = shell_agent.call("probe", root=node.models_root)
        probe["python"] = None
        probe["python_problem"] = completed.tail(200) or f"{node.python} not found"
        return shell_agent, probe
    return python_agent, parse_reply(completed, node.name, "probe")


# -- the shell fallback ---------------------------------------------------------------------------

STATE_DIR = ".modelyard"


class ShellAgent:
    """The agent's commands as POSIX shell, for a node without python3 >= 3.11."""

    def __init__(self, connection: NodeConnection) -> None:
        self.connection = connection
        self.hasher = "openssl dgst -sha256"

    def call(self, command: str, *, payload: bytes | None = None, timeout: float = 600, **fields: Any) -> Any:
        handler = getattr(self, f"_{command}", None)
        if handler is None:
            raise AgentRefused(f"node {self.connection.node.name}: {command} needs python3 >= 3.11 on the node")
        return handler(timeout=timeout, **fields)

    def _sh(self, script: str, timeout: float, what: str) -> str:
        completed = self.connection.check(self.connection.run(["/bin/sh", "-c", script], timeout=timeout), what)
        if not completed.ok:
            raise AgentRefused(f"node {self.connection.node.name}: {what} failed: {completed.tail(300)}")
        return completed.text()

    def _paths(self, root: str, target: str, version: str | None = None) -> dict[str, str]:
        # the same path rules as the python agent: nothing may leave the models root
        from modelyard.distribute.agent import AgentError, models_root, segment

        try:
            models_root({"root": root})
            segment(target, "target name")
            if version is not None:
                segment(version, "version")
        except AgentError as exc:
            raise AgentRefused(f"node {self.connection.node.name}: {exc}") from None
        base = f"{root}/{STATE_DIR}/{target}"
        paths = {"root": root, "base": base, "serving": f"{root}/{target}", "records": f"{base}/records"}
        if version is not None:
            paths |= {
                "version": f"{base}/{version}",
                "staging": f"{base}/.staging/{version}",
                "record": f"{base}/records/{version}.sums",
            }
        return {key: shlex.quote(value) for key, value in paths.items()}

    def _probe(self, *, root: str, timeout: float, paths: list[str] | None = None) -> dict[str, Any]:
        script = (
            f'r={shlex.quote(root)}; e=$r; while [ ! -e "$e" ]; do e=$(dirname "$e"); done; '
            "df -Pk \"$e\" | awk 'NR==2{print $4*1024, $2*1024}'; "
            "for t in rsync openssl sha256sum; do printf '%s=%s\\n' $t \"$(command -v $t)\"; done; "
            'uname -n; [ -d "$r" ] && echo root=yes || echo root=no; [ -w "$e" ] && echo w=yes || echo w=no'
        )
        script += "".join(f"; [ -d {shlex.quote(p)} ] && echo path=yes || echo path=no" for p in paths or [])
        lines = self._sh(script, timeout, "probe").splitlines()
        free, total = (int(float(x)) for x in lines[0].split())
        tools = {line.split("=", 1)[0]: (line.split("=", 1)[1] or None) for line in lines[1:4]}
        return {
            "hostname": lines[4],
            "python": None,
            "root_exists": lines[5] == "root=yes",
            "root_writable": lines[6] == "w=yes",
            "free_bytes": free,
            "total_bytes": total,
            "tools": tools,
            "hasher": "openssl dgst -sha256" if tools.get("openssl") else "none (no python3, no openssl)",
            "peft": False,
            "paths": {path: line == "path=yes" for path, line in zip(paths or [], lines[7:], strict=False)},
        }

    def _state(self, *, root: str, target: str, timeout: float) -> dict[str, Any]:
        p = self._paths(root, target)
        script = (
            f"if [ -L {p['serving']} ]; then echo link=$(readlink {p['serving']}); "
            f"elif [ -e {p['serving']} ]; then echo foreign; else echo missing; fi; "
            f'for d in {p["base"]}/*/; do [ -d "$d" ] || continue; v=$(basename "$d"); '
            f'[ "$v" = records ] && continue; '
            f"if [ -f {p['records']}/$v.sums ]; then "
            f"  ok=yes; while read -r size mtime sum path; do "
            f"    set -- $(stat -c '%s %Y' \"$d$path\" 2>/dev/null || echo x x); "
            f'    [ "$1" = "$size" ] && [ "$2" = "$mtime" ] || ok=no; '
            f"  done < {p['records']}/$v.sums; "
            f'  [ "$(find "$d" -type f | wc -l)" = "$(wc -l < {p["records"]}/$v.sums)" ] || ok=no; '
            f'  echo "version $v $ok $(stat -c %Y {p["records"]}/$v.sums)"; '
            f'else echo "version $v unrecorded 0"; fi; done; '
            f'for d in {p["base"]}/.staging/*/; do [ -d "$d" ] && echo "staging $(basename "$d")"; done; true'
        )
        lines = self._sh(script, timeout, "state").splitlines()
        prefix = f"{STATE_DIR}/{target}/"
        first = lines[0] if lines else "missing"
        current = first[5:][len(prefix) :] if first.startswith("link=" + prefix) else None
        serving = "symlink" if current else ("missing" if first == "missing" else "foreign")
        versions = [
            {
                "version": parts[1],
                "recorded": parts[2] != "unrecorded",
                "intact": parts[2] == "yes",
                "verified_at": float(parts[3]) if len(parts) > 3 and parts[2] != "unrecorded" else None,
                "ref": None,
            }
            for parts in (line.split() for line in lines[1:])
            if parts[0] == "version"
        ]
        staging = [line.split()[1] for line in lines[1:] if line.startswith("staging ")]
        return {"current": current, "serving": serving, "versions": versions, "staging": staging}

    def _prepare(
        self, *, root: str, target: str, version: str, bytes: int, timeout: float, **_ignored: Any
    ) -> dict[str, Any]:
        """Without python3 no file is linked from another version: rsync sends them all."""
        p = self._paths(root, target, version)
        script = (
            f"if [ -f {p['record']} ] && [ -d {p['version']} ]; then echo installed; exit 0; fi; "
            f"mkdir -p {p['staging']} && df -Pk {p['staging']} | awk 'NR==2{{print $4*1024}}'"
        )
        lines = self._sh(script, timeout, "prepare").splitlines()
        if lines and lines[0] == "installed":
            return {"installed": True, "staging": None, "free_bytes": None, "linked": 0}
        free = int(float(lines[0]))
        if bytes > free:
            raise AgentRefused(
                f"node {self.connection.node.name}: not enough disk under {root}: {bytes} bytes needed, {free} free"
            )
        return {
            "installed": False,
            "staging": f"{root}/{STATE_DIR}/{target}/.staging/{version}",
            "free_bytes": free,
            "linked": 0,
        }

    def _verify(
        self,
        *,
        root: str,
        target: str,
        version: str,
        files: list[dict[str, Any]],
        where: str = "installed",
        timeout: float,
        **_ignored: Any,
    ) -> dict[str, Any]:
        p = self._paths(root, target, version)
        directory = p["staging"] if where == "staging" else p["version"]
        script = (
            f'd={directory}; [ -d "$d" ] || d={p["version"]}; cd "$d" || exit 3; echo "dir $d"; '
            "find . -type f | sed 's|^\\./||' | while read -r f; do "
            'echo "file $(stat -c \'%s %Y\' "$f") $(openssl dgst -sha256 -r "$f" | cut -d\' \' -f1) $f"; done'
        )
        lines = self._sh(script, timeout, "verify").splitlines()
        seen: dict[str, dict[str, Any]] = {}
        for line in lines[1:]:
            _, size, mtime, digest, path = line.split(" ", 4)
            seen[path] = {"size": int(size), "mtime": int(mtime), "sha256": digest}
        installed_dir = lines[0].split(" ", 1)[1] == p["version"].strip("'")
        expected = {item["path"]: item for item in files}
        missing = sorted(set(expected) - set(seen))
        extra = sorted(set(seen) - set(expected))
        wrong_size = sorted(f for f in expected if f in seen and seen[f]["size"] != expected[f]["size"])
        wrong_sum = sorted(f for f in expected if f in seen and seen[f]["sha256"] != expected[f]["sha256"])
        checks = {
            "files_present": _check(not missing and not extra, f"missing: {missing}; unexpected: {extra}"),
            "sizes": _check(not wrong_size and not missing, f"size differs: {wrong_size}"),
            "sha256": _check(not wrong_sum and not missing, f"SHA-256 differs: {wrong_sum}"),
            "load": {"status": "skipped", "reason": "python3 >= 3.11 is not on the node"},
        }
        passed = all(checks[name]["status"] == "passed" for name in ("files_present", "sizes", "sha256"))
        if passed:
            sums = "".join(f"{seen[f]['size']} {seen[f]['mtime']} {seen[f]['sha256']} {f}\n" for f in sorted(seen))
            move = "" if installed_dir else f"rm -rf {p['version']}; mv {p['staging']} {p['version']}; "
            self._sh(
                f"{move}mkdir -p {p['records']} && printf %s {shlex.quote(sums)} > {p['record']}.tmp "
                f"&& mv {p['record']}.tmp {p['record']}",
                timeout,
                "record",
            )
        elif not installed_dir:
            bad = [f for f in wrong_size + wrong_sum]
            if bad:  # a retry must send these again: rsync would trust their size and mtime
                self._sh(f"cd {directory} && rm -f -- {' '.join(shlex.quote(f) for f in bad)}", timeout, "discard")
        files_seen = {f: {"size": seen[f]["size"], "sha256": seen[f]["sha256"]} for f in seen}
        return {"checks": checks, "files": files_seen, "passed": passed, "where": where, "changed_since_record": None}

    def _switch(self, *, root: str, target: str, version: str | None, timeout: float) -> dict[str, Any]:
        if version is None:
            return self._unswitch(root=root, target=target, timeout=timeout)
        p = self._paths(root, target, version)
        link = shlex.quote(f"{STATE_DIR}/{target}/{version}")
        temporary = shlex.quote(f"{root}/.{target}.switch-sh")
        script = (
            f"[ -f {p['record']} ] || {{ echo 'version not verified' >&2; exit 3; }}; "
            f"if [ -e {p['serving']} ] && [ ! -L {p['serving']} ]; then echo foreign >&2; exit 4; fi; "
            f"if [ -L {p['serving']} ]; then case $(readlink {p['serving']}) in "
            f"{shlex.quote(STATE_DIR + '/' + target + '/')}*) ;; *) echo foreign >&2; exit 4;; esac; fi; "
            f'old=$(readlink {p["serving"]} 2>/dev/null || true); echo "$old"; '
            f"rm -f {temporary}; ln -s {link} {temporary} && mv -T {temporary} {p['serving']}"
        )
        previous_link = self._sh(script, timeout, "switch").strip()
        prefix = f"{STATE_DIR}/{target}/"
        previous = previous_link[len(prefix) :] if previous_link.startswith(prefix) else None
        return {"previous": previous or None, "current": version}

    def _unswitch(self, *, root: str, target: str, timeout: float) -> dict[str, Any]:
        """Remove the serving symlink (a first version that failed its health check)."""
        p = self._paths(root, target)
        ours = shlex.quote(f"{STATE_DIR}/{target}/")
        script = (
            f"if [ -L {p['serving']} ]; then case $(readlink {p['serving']}) in "
            f"{ours}*) readlink {p['serving']}; rm -f {p['serving']};; esac; fi"
        )
        previous_link = self._sh(script, timeout, "unswitch").strip()
        prefix = f"{STATE_DIR}/{target}/"
        previous = previous_link[len(prefix) :] if previous_link.startswith(prefix) else None
        return {"previous": previous or None, "current": None}

    def _cleanup(
        self, *, root: str, target: str, keep: list[str], keep_staging: list[str] | None = None, timeout: float
    ) -> dict[str, Any]:
        p = self._paths(root, target)
        state = self._state(root=root, target=target, timeout=timeout)
        keep_set = set(keep) | ({state["current"]} if state["current"] else set())
        doomed = [v["version"] for v in state["versions"] if v["version"] not in keep_set]
        staging_doomed = [s for s in state["staging"] if s not in set(keep_staging or [])]
        commands = [f"rm -f {p['records']}/{shlex.quote(v)}.sums; rm -rf {p['base']}/{shlex.quote(v)}" for v in doomed]
        commands += [f"rm -rf {p['base']}/.staging/{shlex.quote(s)}" for s in staging_doomed]
        if commands:
            self._sh("; ".join(commands), timeout, "cleanup")
        return {"removed": doomed + [f".staging/{s}" for s in staging_doomed]}


def _check(ok: bool, reason: str) -> dict[str, str]:
    return {"status": "passed", "reason": ""} if ok else {"status": "failed", "reason": reason}
