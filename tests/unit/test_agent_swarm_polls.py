"""How often the agent asks one peer for its bitfield (long polls answered at once when it changes)."""

from __future__ import annotations

from swarmupdate.agent.swarm import MIN_POLL_GAP, POLL_BUDGET, poll_gap


def test_few_peers_are_asked_up_to_ten_times_a_second() -> None:
    for watched in (1, 2):
        assert poll_gap(watched) == MIN_POLL_GAP == 0.1


def test_bitfield_answers_per_second_stay_within_the_budget_whatever_the_swarm() -> None:
    for watched in (3, 5, 15, 23, 50, 200):
        gap = poll_gap(watched)
        assert gap >= MIN_POLL_GAP
        # every watched peer asked at most once per gap: at most POLL_BUDGET answers a second in all
        assert watched / gap <= POLL_BUDGET + 1e-9
    assert poll_gap(23) > 1.0  # 24 agents at 100 Mbit/s: every 0.1 s was more CPU than the chunks
