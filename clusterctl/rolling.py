"""`up --rolling`: apply a changed inventory one worker group at a time, without losing data.

For each batch of at most ``max_unavailable`` changed groups: retire their workers through the
scheduler (their results move to the other workers), stop them and verify, start the new version
and wait until it registers; then the next batch. New groups start after, removed groups are
retired and stopped last. The first failure halts the roll: the groups not yet reached keep
running on their old configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterctl import lifecycle, scheduler_api, state
from clusterctl.errors import ClusterctlError, HostError
from clusterctl.group import HostGroup
from clusterctl.launch import ProcessPlan
from clusterctl.progress import Progress
from clusterctl.records import ProcessRecord
from clusterctl.scheduler_api import SchedulerView
from clusterctl.state import ClusterState
from clusterctl.timing import DOWN_GRACE


@dataclass
class Change:
    """One worker group to roll: what runs now (None: a new group) and what replaces it (None: removed)."""

    old: ProcessRecord | None
    new: ProcessPlan | None

    @property
    def name(self) -> str:
        return self.new.name if self.new is not None else self.old.name  # type: ignore[union-attr]


@dataclass
class RollResult:
    view: SchedulerView | None = None  # the scheduler's view after the last batch
    started: list[ProcessRecord] = field(default_factory=list)
    rolled: list[str] = field(default_factory=list)  # group names, in order


def changes(stop: list[ProcessRecord], start: list[ProcessPlan]) -> list[Change]:
    """Worker groups to roll: replaced ones first (in inventory order), then new ones, then removed ones."""
    old = {r.name: r for r in stop if r.role == "worker"}
    found = [Change(old.pop(plan.name, None), plan) for plan in start if plan.role == "worker"]
    replaced = [c for c in found if c.old is not None]
    return replaced + [c for c in found if c.old is None] + [Change(r, None) for r in old.values()]


def roll(st: ClusterState, hosts: HostGroup, running: list[ProcessRecord], todo: list[Change],
         max_unavailable: int, timeout: float, progress: Progress) -> RollResult:
    """Roll ``todo`` on a cluster whose scheduler and ``running`` processes stay up meanwhile."""
    st.processes = list(running)
    state.save(st)
    names = [n for r in st.processes if r.role == "worker" for n in r.worker_names]
    result = RollResult()
    for index in range(0, len(todo), max_unavailable):
        batch = todo[index:index + max_unavailable]
        left = [c.name for c in todo[index + len(batch):]]
        try:
            result.view = _roll_batch(st, hosts, batch, names, timeout, progress, result) or result.view
        except ClusterctlError as exc:
            raise _halted(exc, batch, left) from None
        result.rolled += [c.name for c in batch]
    return result


def _roll_batch(st: ClusterState, hosts: HostGroup, batch: list[Change], names: list[str], timeout: float,
                progress: Progress, result: RollResult) -> SchedulerView | None:
    old = [c.old for c in batch if c.old is not None]
    retiring = [n for r in old for n in r.worker_names]
    if retiring:
        progress.step(f"rolling {', '.join(c.name for c in batch)}: retiring {len(retiring)} worker(s) "
                      "(their data moves to the others)")
        scheduler_api.retire(st.scheduler_address, retiring, st.expected_scheduler_id(), tls=st.client_tls())
        gone = lifecycle.verified_gone(lifecycle.stop_records(hosts, old, DOWN_GRACE))
        stuck = [r for r in old if (r.host, r.pid) not in gone]
        if stuck:
            raise HostError(stuck[0].host, f"worker group {stuck[0].name} (pid {stuck[0].pid}) did not stop",
                            "check the host; then run `clusterctl up --rolling` again")
        st.processes = [r for r in st.processes if r not in old]
        state.save(st)
        for name in retiring:
            names.remove(name)
    plans = [c.new for c in batch if c.new is not None]
    if not plans:
        return None
    wanted = [n for plan in plans for n in plan.worker_names]
    progress.step(f"rolling {', '.join(p.name for p in plans)}: starting the new version")
    view, started = lifecycle.start_and_wait(st, hosts, plans, names + wanted, timeout, progress)
    names += wanted
    result.started += started
    return view


def _halted(exc: ClusterctlError, batch: list[Change], left: list[str]) -> ClusterctlError:
    groups = ", ".join(c.name for c in batch)
    untouched = (f"; not reached, still on their old configuration: {', '.join(left)}" if left
                 else "")
    hint = "fix the inventory (or the host), then run `clusterctl up --rolling` again"
    message = f"rolling halted at worker group {groups}: {exc.message}{untouched}"
    if isinstance(exc, HostError):
        return HostError(exc.host, f"rolling halted at worker group {groups}: {exc.reason}{untouched}", hint,
                         exc.details)
    return ClusterctlError(message, hint, exc.details)
