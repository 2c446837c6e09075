"""Recurring edge jobs: the cron expression an administrator types decides the minutes a job runs.

Fast unit tests (`make test-fast`): the real parse_cron and CronSchedule.matches that EdgeJobRunner.schedule uses.
"""
from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import portainer

MONDAY = datetime.datetime(2026, 11, 30)  # a Monday
SUNDAY = datetime.datetime(2026, 11, 29)
SATURDAY = datetime.datetime(2026, 11, 28)


def runs_at(expression: str, moment: datetime.datetime) -> bool:
    return portainer.parse_cron(expression).matches(moment.timetuple())


def minutes_of_an_hour(expression: str) -> list[int]:
    return [m for m in range(60) if runs_at(expression, MONDAY.replace(hour=10, minute=m))]


def test_every_minute_runs_at_any_moment():
    assert all(runs_at("* * * * *", MONDAY + datetime.timedelta(minutes=m)) for m in range(0, 60 * 24 * 8, 37))


def test_a_step_runs_every_n_minutes_from_the_start_of_its_range():
    assert minutes_of_an_hour("*/15 * * * *") == [0, 15, 30, 45]
    assert minutes_of_an_hour("5/20 * * * *") == [5, 25, 45]
    assert minutes_of_an_hour("10-30/10 * * * *") == [10, 20, 30]


def test_lists_and_ranges_combine_in_one_field():
    assert minutes_of_an_hour("0,7,50-52 * * * *") == [0, 7, 50, 51, 52]


def test_a_nightly_job_runs_once_a_day_at_its_hour():
    moments = [MONDAY + datetime.timedelta(minutes=m) for m in range(24 * 60)]
    assert [m.strftime("%H:%M") for m in moments if runs_at("30 3 * * *", m)] == ["03:30"]


def test_weekdays_count_from_sunday_as_zero():
    assert runs_at("0 9 * * 1-5", MONDAY.replace(hour=9))
    assert not runs_at("0 9 * * 1-5", SUNDAY.replace(hour=9))
    assert not runs_at("0 9 * * 1-5", SATURDAY.replace(hour=9))
    assert runs_at("0 9 * * 0", SUNDAY.replace(hour=9))
    assert runs_at("0 9 * * 6", SATURDAY.replace(hour=9))


def test_day_of_month_and_month_select_the_date():
    first_of_december = datetime.datetime(2026, 12, 1, 0, 0)
    assert runs_at("0 0 1 12 *", first_of_december)
    assert not runs_at("0 0 1 12 *", first_of_december.replace(month=11))
    assert not runs_at("0 0 1 12 *", first_of_december.replace(day=2))


@pytest.mark.parametrize("expression, detail", [
    ("* * * *", "five fields"),
    ("* * * * * *", "five fields"),
    ("", "five fields"),
    ("60 * * * *", "outside 0-59"),
    ("* 24 * * *", "outside 0-23"),
    ("* * 0 * *", "outside 1-31"),
    ("* * * 13 *", "outside 1-12"),
    ("* * * * 8", "outside 0-7"),
    ("* * * * funday", "cannot read 'funday'"),
    ("*/0 * * * *", "outside 0-59"),
    ("30-10 * * * *", "outside 0-59"),
    ("every * * * *", "cannot read 'every'"),
    ("1-2-3 * * * *", "cannot read '1-2-3'"),
    ("*/x * * * *", "cannot read '*/x'"),
])
def test_an_expression_that_is_not_cron_is_refused_saying_why(expression, detail):
    with pytest.raises(portainer.BadRequest) as caught:
        portainer.parse_cron(expression)
    assert caught.value.status == 400
    assert caught.value.message == f"invalid CronExpression {expression!r}"
    assert detail in caught.value.details


@settings(deadline=None)  # a shared 2-core machine: a slow example is not a failure
@given(minute=st.integers(0, 59), hour=st.integers(0, 23), day=st.integers(1, 28), month=st.integers(1, 12))
def test_a_fixed_time_runs_exactly_at_that_minute(minute, hour, day, month):
    expression = f"{minute} {hour} {day} {month} *"
    moment = datetime.datetime(2027, month, day, hour, minute)
    assert runs_at(expression, moment)
    assert not runs_at(expression, moment + datetime.timedelta(minutes=1))
    assert not runs_at(expression, moment - datetime.timedelta(minutes=1))


def test_seven_is_sunday_too_and_days_can_be_named():
    assert runs_at("0 9 * * 7", SUNDAY.replace(hour=9))
    assert runs_at("0 9 * * 5-7", SUNDAY.replace(hour=9)) and runs_at("0 9 * * 5-7", SATURDAY.replace(hour=9))
    assert not runs_at("0 9 * * 5-7", MONDAY.replace(hour=9))
    assert runs_at("0 9 * * MON-FRI", MONDAY.replace(hour=9)) and not runs_at("0 9 * * mon-fri", SUNDAY.replace(hour=9))
    assert runs_at("0 0 1 DEC *", datetime.datetime(2026, 12, 1))


def test_a_day_of_month_and_a_weekday_together_run_on_either():
    first_of_december_2026_is_a_tuesday = datetime.datetime(2026, 12, 1)
    assert runs_at("0 0 1 * 1", first_of_december_2026_is_a_tuesday)
    assert runs_at("0 0 1 * 1", datetime.datetime(2026, 12, 7))  # a Monday
    assert not runs_at("0 0 1 * 1", datetime.datetime(2026, 12, 8))
    assert not runs_at("0 0 * * 1", first_of_december_2026_is_a_tuesday)  # a star keeps the other field's rule


def test_descriptors_name_the_usual_schedules():
    assert runs_at("@daily", MONDAY.replace(hour=0, minute=0)) and not runs_at("@daily", MONDAY.replace(hour=1))
    assert runs_at("@hourly", MONDAY.replace(hour=7, minute=0))
    assert runs_at("@weekly", SUNDAY.replace(hour=0, minute=0)) and not runs_at("@weekly", MONDAY.replace(hour=0))
