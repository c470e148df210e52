"""The field-by-field comparison the jobs tests rest on sees what differs, and only that."""

from __future__ import annotations

from tests.support.job_fields import differences

NODE = {"id": "a", "state": "completed", "output": {"n": 1}, "createdOn": "2026-12-02T09:51:37.512Z"}


def test_equal_jobs_and_sub_millisecond_timestamps_are_the_same() -> None:
    ours = {**NODE, "createdOn": "2026-12-02T09:51:37.512859Z", "extra": 1}
    assert differences(ours, NODE) == []


def test_each_difference_is_named() -> None:
    ours = {"id": "a", "state": "retry", "output": {"n": 1}, "createdOn": "2026-12-02T09:51:37.514Z"}
    assert [line.split(":")[0] for line in differences(ours, NODE)] == ["state", "createdOn"]
    assert differences({"id": "a"}, NODE)[0].startswith("state: missing")


def test_numeric_text_from_10x_counts_as_its_number_and_nothing_else() -> None:
    assert differences({"expireInSeconds": 900}, {"expireInSeconds": "900.000000", "expireIn": {"minutes": 15}}) == []
    assert differences({"expireInSeconds": 900}, {"expireInSeconds": "901"}) != []
    assert differences({"expireInSeconds": 900}, {"expireInSeconds": "nine hundred"}) != []
