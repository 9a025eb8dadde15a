"""Who is told about a signal (SPEC §9), across borders (SPEC §8): a pure function, no I/O.

Routing table (``ROUTES``; the first three rows are SPEC §9's, the last two are decisions):

====================================================  =============================================
signal                                                recipients
====================================================  =============================================
``first_day_absence``, ``register_missing``           social worker; Virtual School (looked after);
                                                      School Attendance Officer
``severe_absence_started``                            School Attendance Officer; social worker;
                                                      Early Help lead (early help open); EHCP LA
``penalty_threshold_met``, ``attendance_return_due``,  School Attendance Officer
``sickness_return_due``
``unresolved_n``, ``part_time_timetable_overdue``     School Attendance Officer (decision: both are
                                                      register compliance the LA's officer chases)
``deadline.approaching`` (rollcall.legal.v1)          the case's lead officer
====================================================  =============================================

Every other signal (``band_changed``, ``persistent_absence_started`` and every ``…_ended``)
alerts nobody: those are worked from lists and dashboards (rules' API), not pages.

**Finding recipients.** A recipient has a ``role`` and an optional ``la_code``:

* *People* — ``social_worker``, ``early_help``, ``attendance_officer`` without an ``la_code`` —
  are reached only through allocations (``PUT /v1/allocations/pupils/{upn}``, ``…/schools/{urn}``).
  The same roles *with* an ``la_code`` are that LA's team inbox, used when nobody is allocated:
  a pupil with a social worker (CIN, CP, looked after) but no allocated one → the ``social_worker``
  team of the pupil's **Home LA** (SPEC §8: social care is the Home LA's); early help open with no
  allocated lead → the ``early_help`` team of the Home LA; a school with no named officer → the
  ``attendance_officer`` team of the **School LA**, else the School LA's SAST duty inbox.
* *Inboxes* — ``virtual_school``, ``sast_duty``, ``ehcp_la`` — are found by LA: the recipients of
  the role whose ``la_code`` is the LA in question; a recipient without an ``la_code`` serves the LA
  running Rollcall (policy ``la_code``), which is also the fallback for an LA with no inbox here
  (the home team forwards). The Virtual School is the **Home LA**'s (the LA that looks after the
  child); the EHCP inbox is the **plan-maintaining LA**'s (``ehcp_la_code``, else the Home LA, as
  ingest records it); SAST duty (escalation) is the **School LA**'s.

A recipient reached for two reasons gets one alert (the first reason in the table's order). A
pupil the registry has not described yet is taken to live in the LA running Rollcall.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    SOCIAL_WORKER = "social_worker"
    VIRTUAL_SCHOOL = "virtual_school"
    ATTENDANCE_OFFICER = "attendance_officer"
    SAST_DUTY = "sast_duty"
    EARLY_HELP = "early_help"
    EHCP_LA = "ehcp_la"


INBOX_ROLES = frozenset({Role.VIRTUAL_SCHOOL, Role.SAST_DUTY, Role.EHCP_LA})


class Reason(StrEnum):
    """Why a recipient gets an alert (shown on the alert)."""

    SOCIAL_WORKER = "social_worker"
    SOCIAL_CARE_TEAM = "social_care_team"
    VIRTUAL_SCHOOL = "virtual_school"
    ATTENDANCE_OFFICER = "attendance_officer"
    ATTENDANCE_TEAM = "attendance_team"
    SAST_DUTY = "sast_duty"
    EARLY_HELP_LEAD = "early_help_lead"
    EARLY_HELP_TEAM = "early_help_team"
    EHCP_LA = "ehcp_la"
    LEAD_OFFICER = "lead_officer"
    ESCALATION = "escalation"


class Duty(StrEnum):
    """A column of the routing table: one kind of recipient a signal calls for."""

    SOCIAL_WORKER = "social_worker"
    VIRTUAL_SCHOOL = "virtual_school"
    ATTENDANCE_OFFICER = "attendance_officer"
    EARLY_HELP = "early_help"
    EHCP_LA = "ehcp_la"


_FIRST_DAY = (Duty.SOCIAL_WORKER, Duty.VIRTUAL_SCHOOL, Duty.ATTENDANCE_OFFICER)
ROUTES: Mapping[str, tuple[Duty, ...]] = {
    "first_day_absence": _FIRST_DAY,
    "register_missing": _FIRST_DAY,
    "severe_absence_started": (Duty.ATTENDANCE_OFFICER, Duty.SOCIAL_WORKER, Duty.EARLY_HELP, Duty.EHCP_LA),
    "penalty_threshold_met": (Duty.ATTENDANCE_OFFICER,),
    "attendance_return_due": (Duty.ATTENDANCE_OFFICER,),
    "sickness_return_due": (Duty.ATTENDANCE_OFFICER,),
    "unresolved_n": (Duty.ATTENDANCE_OFFICER,),
    "part_time_timetable_overdue": (Duty.ATTENDANCE_OFFICER,),
}
FIRST_DAY_SIGNALS = frozenset({"first_day_absence", "register_missing"})
DEADLINE_SIGNAL = "deadline_approaching"
ALERT_SIGNALS = frozenset(ROUTES) | {DEADLINE_SIGNAL}
"""Every ``signal`` an alert can carry (subscription ``types`` are checked against it)."""


@dataclass(frozen=True, slots=True)
class Pupil:
    """What the registry says about a pupil, as far as routing needs it."""

    home_la: str | None = None
    ehcp: bool = False
    ehcp_la: str | None = None
    cin: bool = False
    cp: bool = False
    cla: bool = False
    early_help: bool = False

    @property
    def has_social_worker(self) -> bool:
        return self.cin or self.cp or self.cla


@dataclass(frozen=True, slots=True)
class Recipient:
    id: str
    role: str
    la_code: str | None = None


@dataclass(frozen=True, slots=True)
class Directory:
    """Recipients by role (the LA-level ones routing looks up) and the LA running Rollcall."""

    our_la: str
    by_role: Mapping[str, tuple[Recipient, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, our_la: str, recipients: Iterable[Recipient]) -> Directory:
        grouped: dict[str, list[Recipient]] = {}
        for r in sorted(recipients, key=lambda r: r.id):
            grouped.setdefault(r.role, []).append(r)
        return cls(our_la, {role: tuple(rs) for role, rs in grouped.items()})

    def inbox(self, role: Role, la: str | None) -> list[str]:
        """The ``role`` inbox of LA ``la``, falling back to the LA running Rollcall's."""
        wanted = la or self.our_la
        candidates = self.by_role.get(role, ())
        exact = [r.id for r in candidates if (r.la_code or self.our_la) == wanted]
        if exact or wanted == self.our_la:
            return exact
        return [r.id for r in candidates if (r.la_code or self.our_la) == self.our_la]

    def team(self, role: Role, la: str | None) -> list[str]:
        """The team inbox of a people role for LA ``la``: only recipients with that ``la_code``."""
        wanted = la or self.our_la
        return [r.id for r in self.by_role.get(role, ()) if r.la_code == wanted]


@dataclass(frozen=True, slots=True)
class Route:
    recipient: str
    reason: Reason


def route_signal(
    signal: str,
    pupil: Pupil,
    school_la: str | None,
    social_worker: str | None,
    early_help_lead: str | None,
    attendance_officer: str | None,
    directory: Directory,
) -> list[Route]:
    """The recipients of ``signal`` for this pupil at this school (SPEC §8, §9; see the module doc).

    ``social_worker``/``early_help_lead`` are the pupil's allocations and ``attendance_officer``
    the school's named School Attendance Officer (recipient ids, or None).
    """
    routes: list[Route] = []

    def add(ids: Iterable[str], reason: Reason) -> None:
        for rid in ids:
            if all(r.recipient != rid for r in routes):
                routes.append(Route(rid, reason))

    home_la = pupil.home_la or directory.our_la
    for duty in ROUTES.get(signal, ()):
        if duty is Duty.SOCIAL_WORKER:
            if social_worker:
                add([social_worker], Reason.SOCIAL_WORKER)
            elif pupil.has_social_worker:
                add(directory.team(Role.SOCIAL_WORKER, home_la), Reason.SOCIAL_CARE_TEAM)
        elif duty is Duty.VIRTUAL_SCHOOL:
            if pupil.cla:
                add(directory.inbox(Role.VIRTUAL_SCHOOL, home_la), Reason.VIRTUAL_SCHOOL)
        elif duty is Duty.ATTENDANCE_OFFICER:
            if attendance_officer:
                add([attendance_officer], Reason.ATTENDANCE_OFFICER)
            elif team := directory.team(Role.ATTENDANCE_OFFICER, school_la):
                add(team, Reason.ATTENDANCE_TEAM)
            else:
                add(directory.inbox(Role.SAST_DUTY, school_la), Reason.SAST_DUTY)
        elif duty is Duty.EARLY_HELP:
            if early_help_lead:
                add([early_help_lead], Reason.EARLY_HELP_LEAD)
            elif pupil.early_help:
                add(directory.team(Role.EARLY_HELP, home_la), Reason.EARLY_HELP_TEAM)
        elif duty is Duty.EHCP_LA and pupil.ehcp:
            add(directory.inbox(Role.EHCP_LA, pupil.ehcp_la or home_la), Reason.EHCP_LA)
    return routes


def escalation_targets(school_la: str | None, directory: Directory) -> list[str]:
    """The SAST duty inbox an unacknowledged first-day alert escalates to: the School LA's (SPEC §9)."""
    return directory.inbox(Role.SAST_DUTY, school_la)
