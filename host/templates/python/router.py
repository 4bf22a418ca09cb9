"""{{name}}: a sluice route plugin in Python (world `router` of wit/plugin.wit,
sluice:plugin@0.2.0). `pick` is called once for every HTTP request.

  x-beta: 1      -> the `beta-backend` setting (default `beta`)
  GET /hello     -> answered by the plugin itself (and printed with print())
  anything else  -> the `backend` setting (default `web`)

print() lines reach the proxy log, tagged with the plugin's name. A plugin
gets no files and no network.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.route import (
    Decision,
    Decision_Forward,
    Decision_Respond,
    Forward,
    Request,
    Response,
)
from wit_world.exports.setup import HeaderInterest_Only, Manifest
from wit_world.imports import host
from wit_world.imports.types import Header, LogLevel

# The settings, from the plugin's `settings` table in the sluice config.
DEFAULTS = {"backend": "web", "beta-backend": "beta"}
settings = dict(DEFAULTS)


def forward(backend: str) -> Decision:
    return Decision_Forward(Forward(backend, None, [], [], None))


def header(request: Request, name: str) -> str | None:
    for h in request.headers:
        if h.name == name:
            return h.value.decode("utf-8", "replace")
    return None


class Setup(exports.Setup):
    def init(self, settings_json: str) -> Manifest:
        """Called once per instance with the settings as JSON. Raising Err
        refuses them: sluice then refuses to load the plugin and prints the
        message."""
        given = json.loads(settings_json)
        for key, value in given.items():
            if key not in DEFAULTS:
                raise Err(f"unknown setting `{key}` (known: {', '.join(DEFAULTS)})")
            if not isinstance(value, str) or not value:
                raise Err(f"setting `{key}` must be a backend name")
        settings.clear()
        settings.update(DEFAULTS, **given)
        host.log(LogLevel.INFO, "{{name}} ready")
        # The manifest: every backend a decision can name (sluice checks them
        # against the config), and the only request headers `pick` reads.
        return Manifest(
            backends=[settings["backend"], settings["beta-backend"]],
            headers=HeaderInterest_Only(["x-beta"]),
        )


class Route(exports.Route):
    def pick(self, req: Request) -> Decision:
        if header(req, "x-beta") == "1":
            return forward(settings["beta-backend"])
        if req.path == "/hello":
            greeting = f"hello from {{name}}, {req.conn.client_addr}"
            print(greeting, flush=True)
            body = (greeting + "\n").encode()
            headers = [Header("content-type", b"text/plain; charset=utf-8")]
            return Decision_Respond(Response(200, headers, body))
        return forward(settings["backend"])
