"""The service table an agent keeps for its next start (nodeagent/savedservices.py)."""

import asyncio

from podnet.nodeagent.savedservices import SERVICES_FILE, SavedServiceTable
from podnet.overlay.pipeline.nat import ServiceTable

TABLE = {"mode": "iptables", "services": [{
    "service": "default/web", "port_name": "http", "protocol": "TCP", "cluster_ip": "10.96.0.20", "port": 80,
    "node_port": 30080, "endpoints": [["10.244.1.5", 8080, "node-2"]]}]}


def test_the_table_kept_is_the_table_installed_at_the_next_start(tmp_path):
    asyncio.run(SavedServiceTable(tmp_path).save(TABLE))
    restored = SavedServiceTable(tmp_path).load()
    assert ServiceTable.from_data(restored).to_data() == ServiceTable.from_data(TABLE).to_data()
    assert ServiceTable.from_data(restored).node_ports() == [(30080, "TCP")]


def test_the_last_table_saved_is_the_one_kept(tmp_path):
    saved = SavedServiceTable(tmp_path)

    async def save_both() -> None:  # as two services.apply calls in a row: the second's write waits
        await asyncio.gather(saved.save(TABLE), saved.save({"mode": "iptables", "services": []}))

    asyncio.run(save_both())
    assert saved.load() == {"mode": "iptables", "services": []}
    assert [p.name for p in tmp_path.iterdir()] == [SERVICES_FILE]


def test_no_table_or_an_unreadable_one_is_none(tmp_path):
    saved = SavedServiceTable(tmp_path)
    assert saved.load() is None
    (tmp_path / SERVICES_FILE).write_bytes(b"\xc1 not msgpack")
    assert saved.load() is None
    (tmp_path / SERVICES_FILE).write_bytes(b"\x92\x01")  # cut short
    assert saved.load() is None
