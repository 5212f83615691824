"""A TCP proxy to a Redis unix socket whose connections can be frozen: kept open, forwarding nothing.

That is what a network partition or a dead peer looks like to a client whose connection never got a
reset: writes succeed, replies never come. Connections made after a freeze forward normally, as new
connections would reach a live server.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time

PUMP_WAIT_S = 0.1


class FreezingProxy:
    def __init__(self, unix_path: str) -> None:
        self.unix_path = unix_path
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self._links: list[dict[str, object]] = []
        self._stopped = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def freeze_existing(self) -> int:
        """Freeze every connection open now; returns how many. Returns once no pump can still be
        forwarding what it read before the freeze (each looks at its flag every `PUMP_WAIT_S`)."""
        for link in self._links:
            link["frozen"] = True
        time.sleep(3 * PUMP_WAIT_S)
        return len(self._links)

    def stop(self) -> None:
        """Stop accepting and forwarding; every socket is closed by its own thread, waited for here."""
        self._stopped.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(timeout=2)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.unix_path)
            link: dict[str, object] = {"frozen": False}
            self._links.append(link)
            pump = threading.Thread(target=self._pump, args=(client, server, link), daemon=True)
            self._threads.append(pump)
            pump.start()

    def _pump(self, client: socket.socket, server: socket.socket, link: dict[str, object]) -> None:
        peers = {client: server, server: client}
        with client, server, contextlib.suppress(OSError):
            while not self._stopped.is_set():
                if link["frozen"]:
                    time.sleep(PUMP_WAIT_S)  # hold both ends open, pass nothing
                    continue
                readable, _, _ = select.select(list(peers), [], [], PUMP_WAIT_S)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
