"""What ``local train`` makes of the stack's dead letters (ops/local_train.DeadLetters).

The letters are written by the local Lambda service itself (``LambdaService.dead_letter``, the
file a real stack fills), in the shapes its invocations and its stream poller give them.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lambdatrain.local.service import LambdaService
from lambdatrain.ops.local_train import DeadLetters
from lambdatrain.ops.progress import Display
from lambdatrain.protocol.errors import LambdaTrainError
from lambdatrain.protocol.events import CombineEvent, WorkEvent
from lambdatrain.roles.settings import COMBINER, WORKER

KILLED = {"errorMessage": "Runtime exited with error: exit status -9", "errorType": "Runtime.ExitError"}
RAISED = {"errorMessage": "boom", "errorType": "ValueError", "stackTrace": ["..."]}


class Notes(Display):
    def __init__(self):
        self.lines: list[str] = []

    def note(self, text):
        self.lines.append(text)


@pytest.fixture
def stack(tmp_path):
    return SimpleNamespace(service=LambdaService([], {}, tmp_path), state_dir=tmp_path)


def _work(round_no: int, worker: int) -> dict:
    return WorkEvent(run="run-1", round=round_no, workerno=worker, workers=2, epochsdone=0).to_event()


def test_a_worker_killed_for_good_once_is_a_line_and_left_to_the_watchdog(stack):
    notes = Notes()
    check = DeadLetters(stack, notes)
    stack.service.dead_letter(WORKER, _work(3, 1), "r1", KILLED)
    check()
    check()  # a letter is judged once, however often the loop polls
    assert notes.lines == ["worker 1 of round 3 failed for good: Runtime exited with error: exit status -9; "
                           "the watchdog re-drives it once its round is idle for round_deadline_s"]


def test_the_same_event_killed_for_good_again_after_its_redrive_stops_local_train(stack):
    check = DeadLetters(stack, Notes())
    stack.service.dead_letter(WORKER, _work(3, 1), "r1", KILLED)
    stack.service.dead_letter(WORKER, _work(3, 0), "r2", KILLED)  # another worker: its own first
    check()
    stack.service.dead_letter(WORKER, _work(3, 1), "r3", {**KILLED, "errorMessage": "Task timed out after 40.00 s",
                                                          "errorType": "TimeoutError"})
    with pytest.raises(LambdaTrainError) as raised:
        check()
    message = str(raised.value)
    assert message.startswith("worker 1 of round 3 failed for good: Task timed out after 40.00 s again after "
                              "the watchdog re-drove it (logs in ")
    assert "\n" not in message


def test_a_handler_error_stops_local_train_at_its_first_dead_letter(stack):
    check = DeadLetters(stack, Notes())
    combine = CombineEvent(run="run-1", round=2, workers=2, epochsdone=0).to_event()
    stack.service.dead_letter(COMBINER, combine, "r1", RAISED)
    with pytest.raises(LambdaTrainError, match=r"^the combine of round 2 failed for good: boom \(logs in "):
        check()


def test_a_stream_batch_the_combiner_died_on_is_left_to_the_watchdog_and_one_it_raised_on_is_not(stack):
    notes = Notes()
    check = DeadLetters(stack, notes)
    stack.service.dead_letter("stream", {"Records": [{"eventID": "1"}]}, "", KILLED)
    check()
    assert len(notes.lines) == 1 and notes.lines[0].startswith("a stream batch of the combiner failed for good")
    stack.service.dead_letter("stream", {"Records": [{"eventID": "2"}]}, "", {"errorMessage": "no such run"})
    with pytest.raises(LambdaTrainError, match="no such run"):
        check()
