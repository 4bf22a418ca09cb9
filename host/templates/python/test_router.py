"""Run the plugin natively (no component build needed): ./test.sh

test.sh writes the Python bindings for the WIT into .bindings/ first.
"""

import unittest
from unittest import mock

import app
from componentize_py_types import Err
from wit_world.exports.route import Request
from wit_world.exports.setup import HeaderInterest_Only
from wit_world.imports import host
from wit_world.imports.types import Connection, Header

CONN = Connection(
    listener="test", client_addr="127.0.0.1:50000", local_addr="127.0.0.1:8080", tls=None, hello=None, tenant=None
)


def request(path: str, headers: dict[str, str] | None = None) -> Request:
    pairs = [Header(name, value.encode()) for name, value in (headers or {}).items()]
    return Request("GET", path, "www.test", pairs, CONN)


class RouterTest(unittest.TestCase):
    def setUp(self) -> None:
        # sluice provides `host.log`; here it only records the lines.
        patcher = mock.patch.object(host, "log")
        self.log = patcher.start()
        self.addCleanup(patcher.stop)
        self.manifest = app.Setup().init("{}")

    def test_declares_its_backends_and_the_one_header_it_reads(self) -> None:
        self.assertEqual(self.manifest.backends, ["web", "beta"])
        self.assertEqual(self.manifest.headers, HeaderInterest_Only(["x-beta"]))
        self.assertIn("{{name}} ready", self.log.call_args.args[1])

    def test_routes_by_the_x_beta_header(self) -> None:
        self.assertEqual(app.Route().pick(request("/")).value.backend, "web")
        self.assertEqual(app.Route().pick(request("/", {"x-beta": "1"})).value.backend, "beta")

    def test_answers_hello_itself(self) -> None:
        response = app.Route().pick(request("/hello")).value
        self.assertEqual(response.status, 200)
        self.assertTrue(response.body.startswith(b"hello from {{name}}, 127.0.0.1:50000"))

    def test_takes_its_backends_from_the_settings_and_refuses_unknown_ones(self) -> None:
        app.Setup().init('{"backend": "app"}')
        self.assertEqual(app.Route().pick(request("/")).value.backend, "app")
        with self.assertRaises(Err) as refused:
            app.Setup().init('{"bakend": "app"}')
        self.assertIn("unknown setting `bakend`", refused.exception.value)


if __name__ == "__main__":
    unittest.main()
