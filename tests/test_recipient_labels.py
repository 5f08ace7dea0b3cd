"""What a recipient's state is called depends on how it gets its copy."""

import pytest

from transfers.models import Recipient


@pytest.mark.parametrize(("method", "label"), [
    (Recipient.Method.EXPORT, "Waiting for the export"),
    (Recipient.Method.OBJECT_ACL, "Waiting for the export"),
    (Recipient.Method.LAUNCH_PERMISSION, "Waiting for the launch permission"),
    (Recipient.Method.PERMISSION_ONLY, "Waiting for the launch permission"),
    (Recipient.Method.DIRECT, "Waiting to copy"),
])
def test_a_waiting_recipient_says_what_it_waits_for(method, label):
    assert Recipient(state=Recipient.State.WAITING, method=method).get_state_display() == label


def test_other_states_keep_their_label():
    assert Recipient(state=Recipient.State.IMPORTING, method=Recipient.Method.DIRECT).get_state_display() == "Importing"
