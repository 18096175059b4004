"""One lifecycle for every HTTP server the project runs: a WSGI app served by waitress.

Production (`backupbot run` in HTTP mode), the VPS simulator and the Slack double all serve through
`WsgiServer`, so starting on a free port, serving in a thread, and stopping cleanly (also from a
signal handler) are written once. waitress is a production WSGI server, pure Python and embeddable
in a thread, so the tests run the very server production runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WsgiServer:
    """`serve_forever()` in the foreground (production), or `start()` in a daemon thread."""

    def __init__(
        self,
        app: WsgiApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        threads: int = 8,
        ident: str = "backupbot",
        **options: Any,
    ) -> None:
        from waitress.server import create_server

        self._host = host
        self._server: Any = create_server(
            app, host=host, port=port, threads=threads, ident=ident, **options
        )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    @property
    def url(self) -> str:
        """`http://HOST:PORT` as a client on this machine reaches it."""
        host = self._host if self._host not in ("0.0.0.0", "", "::") else "127.0.0.1"  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        """Serve until `request_stop()` (e.g. from a SIGTERM handler); then finish the workers."""
        try:
            self._server.run()
        finally:
            self._server.task_dispatcher.shutdown()

    def start(self) -> WsgiServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever, name=f"waitress-{self.port}", daemon=True
            )
            self._thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the loop to close every socket and return; safe from a signal handler."""
        from waitress import wasyncore

        server = self._server
        if server.trigger._closed:  # stopped already
            return

        def close_all_but_the_trigger() -> None:
            for dispatcher in list(server._map.values()):
                if dispatcher is server:  # the server's own close() closes the trigger too
                    wasyncore.dispatcher.close(server)
                elif dispatcher is not server.trigger:
                    dispatcher.close()
            server._map.clear()  # the loop ends; the trigger's pipe stays open: see stop()

        # Close from inside waitress's own loop (woken by its trigger): closing the socket from
        # another thread races its select() (EBADF) or waits out the loop's 1 s timeout.
        server.trigger.pull_trigger(close_all_but_the_trigger)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving; safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self.request_stop()
        thread.join(timeout=timeout)
        # Only now: the loop may run the thunk before pull_trigger() above has written to the
        # pipe, and workers pull it until they end; a write to a closed (or reused!) descriptor
        # fails or lands elsewhere.
        self._server.trigger.close()

    def __enter__(self) -> WsgiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
