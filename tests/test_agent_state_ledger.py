"""The agent's telemetry ledger: every window a boot produced is counted durably, in the same
transaction as its outbox row, and stays counted after delivery (so a lost tail can be seen)."""

from __future__ import annotations

from pathlib import Path

from edgefleet.agent.state import AgentState


def test_ledger_counts_windows_per_boot_and_survives_confirmation_and_reopen(tmp_path: Path) -> None:
    state = AgentState(tmp_path / "agent.db")
    for seq in range(3):  # boot A made windows 0, 1, 2
        state.enqueue("t", b"w", qos=1, retain=False, kind="telemetry", boot_id="A", seq=seq)
    state.enqueue("t", b"w", qos=1, retain=False, kind="telemetry", boot_id="B", seq=0)
    state.enqueue("a", b"ack", qos=1, retain=False, kind="ack")  # acks are not windows
    assert state.telemetry_ledger() == {"A": 3, "B": 1}  # produced = highest seq + 1
    assert state.confirmed("A", [0, 1, 2]) == 3  # delivered and confirmed: outbox rows go ...
    assert state.telemetry_ledger() == {"A": 3, "B": 1}  # ... the ledger stays
    state.close()
    again = AgentState(tmp_path / "agent.db")  # a restart (or a SIGKILL) keeps it
    assert again.telemetry_ledger() == {"A": 3, "B": 1}
    again.close()


def test_a_resent_or_reordered_seq_never_lowers_the_count(tmp_path: Path) -> None:
    state = AgentState(tmp_path / "agent.db")
    state.enqueue("t", b"w", qos=1, retain=False, kind="telemetry", boot_id="A", seq=4)
    state.enqueue("t", b"w", qos=1, retain=False, kind="telemetry", boot_id="A", seq=2)
    assert state.telemetry_ledger() == {"A": 5}  # max(4 + 1, 2 + 1)
    state.close()
