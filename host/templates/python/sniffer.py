"""{{name}}: a sluice sniff plugin in Python (world `sniffer` of wit/plugin.wit,
sluice:plugin@0.2.0). `classify` is called with the first bytes of each new
connection, again each time more arrive, until it decides.

  b"PING\\r\\n"    -> answered by the plugin itself with b"PONG\\r\\n", then closed
  anything else  -> the `backend` setting, or the listener's default backend

print() lines reach the proxy log, tagged with the plugin's name. A plugin
gets no files and no network.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.setup import HeaderInterest_All, Manifest
from wit_world.exports.sniff import (
    Reply,
    Verdict,
    Verdict_Forward,
    Verdict_ForwardDefault,
    Verdict_NeedMore,
    Verdict_Reply,
)
from wit_world.imports import host
from wit_world.imports.types import Connection, LogLevel

PING = b"PING\r\n"

# The settings, from the plugin's `settings` table in the sluice config.
backend: str | None = None


class Setup(exports.Setup):
    def init(self, settings_json: str) -> Manifest:
        """Called once per instance with the settings as JSON. Raising Err
        refuses them: sluice then refuses to load the plugin and prints the
        message."""
        global backend
        given = json.loads(settings_json)
        for key, value in given.items():
            if key != "backend":
                raise Err(f"unknown setting `{key}` (known: backend)")
            if not isinstance(value, str) or not value:
                raise Err("setting `backend` must be a backend name")
        backend = given.get("backend")
        host.log(LogLevel.INFO, "{{name}} ready")
        # The manifest: every backend a verdict can name (sluice checks them
        # against the config). Sniff plugins see no headers: `headers` is unused.
        return Manifest(backends=[backend] if backend else [], headers=HeaderInterest_All())


class Sniff(exports.Sniff):
    def classify(self, conn: Connection, head: bytes, complete: bool) -> Verdict:
        starts_like_ping = PING.startswith(head[: len(PING)])
        if starts_like_ping and len(head) >= len(PING):
            print(f"ping from {conn.client_addr}", flush=True)
            return Verdict_Reply(Reply(b"PONG\r\n", True))
        if starts_like_ping and not complete:
            return Verdict_NeedMore()
        return Verdict_Forward(backend) if backend else Verdict_ForwardDefault()
