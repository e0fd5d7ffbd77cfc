"""The link soak in the test suite (smaller than benchmarks/link_soak.py's 100,000 frames):
a digits training run through a line that corrupts, drops, duplicates and loses frames, over
the reference device model of the HostLink driving a modelled Trainer bus, bit-exact with
golden; and the control: the same soak against a device that executes repeated WRITEs again
(no sequence numbers) is not."""

from __future__ import annotations

from tests.support import link_soak
from tests.support.benches import tb_host_link_model as hm


def test_soak_a_training_run_through_a_faulty_line_is_bit_exact(capsys):
    r = link_soak.run_soak(epochs=1, rate=0.03, lose_rate=0.01, seed=2)
    with capsys.disabled():
        print(f"\nlink soak: {r['frames']} frames, {r['corrupted_frames']} corrupted "
              f"({r['corrupted_percent']}%), faults {r['faults']}; {r['retries']} retries, "
              f"{r['recovered_requests']} requests recovered, "
              f"{r['repeated_writes_not_applied']} repeated WRITEs not applied; {r['seconds']} s")
    assert r["bit_exact"]
    assert r["frames"] >= 4000 and r["corrupted_percent"] >= 2
    for kind in ("request flip", "request drop", "request dup", "response flip",
                 "response drop", "response dup", "response lost"):
        assert r["faults"].get(kind, 0) > 0, kind
    assert r["retries"] > 50 and r["recovered_requests"] > 50
    assert r["repeated_writes_not_applied"] > 0


def test_soak_fails_without_the_repeat_rule(monkeypatch):
    """Lost answers to WRITEs of CONTROL.START: a device without the rule runs the program a
    second time when the host retries, and the run leaves golden."""
    real = hm.DeviceModel._execute

    def forgetful(self):
        self.last_write = None          # never recognises a repeated WRITE
        return real(self)

    monkeypatch.setattr(hm.DeviceModel, "_execute", forgetful)
    r = link_soak.run_soak(epochs=1, rate=0.0, lose_rate=0.08, seed=3)
    assert r["faults"].get("response lost", 0) > 100
    assert not r["bit_exact"]
    monkeypatch.undo()
    assert link_soak.run_soak(epochs=1, rate=0.0, lose_rate=0.08, seed=3)["bit_exact"]


def test_machine_bus_is_the_trainers_bus():
    """The modelled bus answers like the Trainer: ID, geometry, chunked words read back."""
    from hw.contract import MAGIC, REGION_SHIFT, Geometry, Reg, Region, bus_read_span, bus_writes
    from hw.contract import words_from_bus

    g = Geometry(side=4)
    bus = link_soak.MachineBus(g)
    assert bus.read(int(Reg.ID)) == MAGIC and bus.read(int(Reg.SIDE)) == 4
    words = [(1 << 35) | 5, 7]
    for addr, chunks in bus_writes(g, Region.ACT, 3, words):
        for i, c in enumerate(chunks):
            bus.write(addr + i, c)
    addr, n = bus_read_span(g, Region.ACT, 3, 2)
    assert words_from_bus(g, Region.ACT, [bus.read(addr + i) for i in range(n)], 2) == words
    bus.read((int(Region.ACT) << REGION_SHIFT) | (g.act_depth << 1))
    assert bus.status_bits["access_error"]


