"""A sluice route plugin in Python (world `router` of wit/plugin.wit,
sluice:plugin@0.2.0).

  x-beta: 1      -> backend `beta`
  GET /hello     -> answered by the plugin itself, greeting printed with print()
  anything else  -> backend `web`

print() lines reach the proxy log, tagged with the plugin's name. The plugin
gets no files and no network (see docs/PLUGINS-LANGUAGES.md).
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


def forward(backend: str) -> Decision:
    return Decision_Forward(Forward(backend, None, [], [], None))


def header(request: Request, name: str) -> str | None:
    for h in request.headers:
        if h.name == name:
            return h.value.decode("utf-8", "replace")
    return None


class Setup(exports.Setup):
    def init(self, settings: str) -> Manifest:
        # This plugin has no settings, but refuses typos.
        unknown = sorted(json.loads(settings))
        if unknown:
            raise Err(f"unknown settings: {', '.join(unknown)}")
        host.log(LogLevel.INFO, "py-router ready")
        # The manifest: the backends `pick` names (sluice checks them against
        # the config) and the only request header it reads.
        return Manifest(backends=["web", "beta"], headers=HeaderInterest_Only(["x-beta"]))


class Route(exports.Route):
    def pick(self, req: Request) -> Decision:
        if header(req, "x-beta") == "1":
            return forward("beta")
        if req.path == "/hello":
            greeting = f"hello from Python, {req.conn.client_addr}"
            print(f"py-router: {greeting}", flush=True)
            body = (greeting + "\n").encode()
            headers = [Header("content-type", b"text/plain; charset=utf-8")]
            return Decision_Respond(Response(200, headers, body))
        return forward("web")
