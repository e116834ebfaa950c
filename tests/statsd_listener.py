"""A UDP socket standing in for a StatsD server, for tests that check the metrics a DAG run emits."""

from __future__ import annotations

import socket


class StatsdListener:
    """Bound to a free loopback port; ``env`` points Airflow's StatsD metrics at it."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)

    @property
    def env(self) -> dict[str, str]:
        return {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(self._socket.getsockname()[1]),
        }

    def received(self) -> str:
        """Every packet received so far, one per line; waits at most 0.2 s after the last one."""
        packets = []
        try:
            while True:
                packets.append(self._socket.recv(65535).decode())
        except TimeoutError:
            pass
        return "\n".join(packets)

    def close(self) -> None:
        self._socket.close()
