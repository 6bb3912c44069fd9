from outbox.states import FINISHED_STATES, LIVE_STATES, TRANSITIONS, JobStatus, sources_of


def test_every_state_has_a_row_in_the_transition_table() -> None:
    assert set(TRANSITIONS) == set(JobStatus)


def test_live_and_finished_states_split_all_states() -> None:
    assert set(JobStatus) == LIVE_STATES | FINISHED_STATES
    assert not LIVE_STATES & FINISHED_STATES


def test_completed_leaves_only_by_operator_replay() -> None:
    assert TRANSITIONS[JobStatus.COMPLETED] == frozenset({JobStatus.PENDING})


def test_finished_states_leave_only_by_operator_requeue() -> None:
    for state in FINISHED_STATES:
        assert TRANSITIONS[state] <= {JobStatus.PENDING}


def test_only_a_running_job_can_complete_fail_or_die() -> None:
    for target in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.DEAD):
        assert sources_of(target) == {JobStatus.PROCESSING}


def test_no_state_moves_to_itself() -> None:
    for state, targets in TRANSITIONS.items():
        assert state not in targets
