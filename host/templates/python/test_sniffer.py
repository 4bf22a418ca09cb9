"""Run the plugin natively (no component build needed): ./test.sh

test.sh writes the Python bindings for the WIT into .bindings/ first.
"""

import unittest
from unittest import mock

import app
from componentize_py_types import Err
from wit_world.exports.sniff import Verdict_Forward, Verdict_ForwardDefault, Verdict_NeedMore
from wit_world.imports import host
from wit_world.imports.types import Connection

CONN = Connection(
    listener="test", client_addr="127.0.0.1:50000", local_addr="127.0.0.1:8080", tls=None, hello=None, tenant=None
)


class SnifferTest(unittest.TestCase):
    def setUp(self) -> None:
        # sluice provides `host.log`; here it only records the lines.
        patcher = mock.patch.object(host, "log")
        self.log = patcher.start()
        self.addCleanup(patcher.stop)
        self.manifest = app.Setup().init("{}")

    def test_declares_no_backend_without_settings(self) -> None:
        self.assertEqual(self.manifest.backends, [])
        self.assertIn("{{name}} ready", self.log.call_args.args[1])

    def test_answers_ping_itself_waiting_for_the_whole_line(self) -> None:
        self.assertEqual(app.Sniff().classify(CONN, b"PI", False), Verdict_NeedMore())
        reply = app.Sniff().classify(CONN, b"PING\r\n", False).value
        self.assertEqual((reply.data, reply.then_close), (b"PONG\r\n", True))

    def test_sends_everything_else_to_the_default_backend_or_the_configured_one(self) -> None:
        sniff = app.Sniff()
        self.assertEqual(sniff.classify(CONN, b"GET / HTTP/1.1\r\n", False), Verdict_ForwardDefault())
        self.assertEqual(sniff.classify(CONN, b"PI", True), Verdict_ForwardDefault())
        self.assertEqual(app.Setup().init('{"backend": "ssh"}').backends, ["ssh"])
        self.assertEqual(sniff.classify(CONN, b"SSH-2.0", False), Verdict_Forward("ssh"))
        with self.assertRaises(Err) as refused:
            app.Setup().init('{"backnd": "ssh"}')
        self.assertIn("unknown setting `backnd`", refused.exception.value)


if __name__ == "__main__":
    unittest.main()
