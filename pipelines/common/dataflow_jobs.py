"""Dataflow jobs by name: deterministic job names, finding a job already launched, waiting for one to end.

A stage's job name is a function of the stage, the run date and a fingerprint of what the job computes (the
config and the stage's input URIs), so a driver that restarts finds the job it launched instead of launching a
second one, and a changed config or input gets a new name. Dataflow itself refuses a second *active* job with
the same name; `find_job` also finds a finished one, so a finished stage is not run again.

The one network call is `dataflow_get`, a GET on the Dataflow REST API (v1b3, `projects.locations.jobs`) through
google-auth's `AuthorizedSession`; everything else works on its JSON responses (Job resources: `id`, `name`,
`currentState`, `createTime`, …; `jobs.list` pages carry `nextPageToken`), so tests give it recorded responses.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Optional

DATAFLOW_API = "https://dataflow.googleapis.com/v1b3"
# Dataflow's rule for job names: lowercase letters, digits and hyphens, starting with a letter, ending with a
# letter or a digit, at most 1024 characters.
JOB_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,1022}[a-z0-9])?$")
FINGERPRINT_CHARS = 12

# Job states (the REST API's JobState enum) a launch should not repeat: the job is coming, running, or done.
# JOB_STATE_RESOURCE_CLEANING_UP follows a successful batch run. JOB_STATE_STOPPED is left out: the JobState
# reference calls it "not yet started", while jobs.list's TERMINATED filter counts it as terminated.
ACTIVE_STATES = frozenset({"JOB_STATE_PENDING", "JOB_STATE_QUEUED", "JOB_STATE_RUNNING",
                           "JOB_STATE_RESOURCE_CLEANING_UP"})
DONE = "JOB_STATE_DONE"
REUSABLE_STATES = ACTIVE_STATES | {DONE}
# States a job never leaves.
TERMINAL_STATES = frozenset({DONE, "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_UPDATED",
                             "JOB_STATE_DRAINED"})


class JobFailed(RuntimeError):
    """A Dataflow job ended in a terminal state other than JOB_STATE_DONE."""

    def __init__(self, job: Mapping[str, Any]):
        self.job = dict(job)
        super().__init__(f"Dataflow job {job.get('name')} ({job.get('id')}) ended in {job.get('currentState')}: "
                         "see its logs in the Dataflow console, fix the cause and rerun the stage")


def config_fingerprint(config_dump: Mapping[str, Any], inputs: Mapping[str, Optional[str]]) -> str:
    """A stable hash (sha256 hex) of a config dump (`Config.model_dump(mode="json")`) and the stage's input URIs
    (name → URI; None for an input not given). Key order does not matter; any changed value changes it."""
    canonical = json.dumps({"config": config_dump, "inputs": dict(inputs)}, sort_keys=True, separators=(",", ":"),
                           default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def job_name(stage: str, date: str | dt.date, fingerprint: str) -> str:
    """`posters-<stage>-<yyyymmdd>-<first 12 hex of fingerprint>`: a valid Dataflow job name, the same every time
    for the same arguments. `date` is a `datetime.date` or `YYYY-MM-DD`."""
    day = date if isinstance(date, dt.date) else dt.date.fromisoformat(str(date))
    stage_part = re.sub(r"[^a-z0-9]+", "-", stage.lower()).strip("-")
    digest = fingerprint.lower()[:FINGERPRINT_CHARS]
    if not stage_part or not re.fullmatch(r"[0-9a-f]+", digest):
        raise ValueError(f"job_name: stage {stage!r} needs a letter or digit and fingerprint {fingerprint!r} "
                         "must be hexadecimal")
    name = f"posters-{stage_part}-{day:%Y%m%d}-{digest}"
    assert JOB_NAME.match(name), name
    return name


def _created(job: Mapping[str, Any]) -> dt.datetime:
    """A Job's createTime (RFC 3339, 'Z' or an offset, up to nanoseconds) as an aware datetime."""
    text = job.get("createTime") or "1970-01-01T00:00:00Z"
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))  # fromisoformat takes microseconds
    return dt.datetime.fromisoformat(text)


def find_job(name: str, list_response_pages: Iterable[Mapping[str, Any]]) -> Optional[dict]:
    """The newest job called `name` that is pending, queued, running or done, from `jobs.list` response pages
    (each `{"jobs": [Job, …], "nextPageToken": …}`); None when every such job failed or was cancelled, or none
    exists. Jobs of other names in the pages are ignored."""
    candidates = [job for page in list_response_pages for job in page.get("jobs", [])
                  if job.get("name") == name and job.get("currentState") in REUSABLE_STATES]
    return dict(max(candidates, key=_created)) if candidates else None


def reusable_job(name: str, recorded_job_id: Optional[str], get: Callable[[str], Mapping[str, Any]],
                 list_pages: Callable[[], Iterable[Mapping[str, Any]]]) -> Optional[dict]:
    """What a rerun waits for instead of launching `name` again: the job recorded in the run state (`jobs.get` of
    `recorded_job_id`) when it is that job and pending, queued, running or done; else the newest such job of that
    name in `jobs.list` (`find_job`); None when there is none (launch it)."""
    if recorded_job_id:
        job = dict(get(recorded_job_id))
        if job.get("name") == name and job.get("currentState") in REUSABLE_STATES:
            return job
    return find_job(name, list_pages())


def wait_for_job(job_id: str, get: Callable[[str], Mapping[str, Any]], poll_s: float = 30.0,
                 timeout_s: Optional[float] = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> dict:
    """Polls `get(job_id)` (a Job resource) until the job is in a terminal state; returns it when that state is
    JOB_STATE_DONE, raises `JobFailed` for any other terminal state and TimeoutError after `timeout_s`."""
    deadline = None if timeout_s is None else clock() + timeout_s
    while True:
        job = dict(get(job_id))
        state = job.get("currentState", "JOB_STATE_UNKNOWN")
        if state == DONE:
            return job
        if state in TERMINAL_STATES:
            raise JobFailed(job)
        if deadline is not None and clock() + poll_s > deadline:
            raise TimeoutError(f"Dataflow job {job_id} still {state} after {timeout_s:.0f} s")
        sleep(poll_s)


# --- the REST API ---------------------------------------------------------------------------------------------

def authorized_session():
    """A requests session with the application default credentials (imported lazily: only drivers need it)."""
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    return AuthorizedSession(credentials)


def dataflow_get(project: str, region: str, job_id: str = "", params: Optional[Mapping[str, str]] = None,
                 session=None) -> dict:
    """GET `projects/{project}/locations/{region}/jobs[/{job_id}]`: `jobs.list` without a job id, `jobs.get`
    with one; returns the JSON body and raises `requests.HTTPError` for an error status."""
    session = session if session is not None else authorized_session()
    url = f"{DATAFLOW_API}/projects/{project}/locations/{region}/jobs" + (f"/{job_id}" if job_id else "")
    response = session.get(url, params=dict(params or {}), timeout=60)
    response.raise_for_status()
    return response.json()


def list_job_pages(project: str, region: str, name: Optional[str] = None, session=None) -> Iterator[dict]:
    """Every page of `jobs.list` (filter ALL: active and terminated) for the region, following nextPageToken;
    with `name`, only jobs of that name are asked for (find_job filters by name again in any case)."""
    token = None
    while True:
        params = {"filter": "ALL", **({"name": name} if name else {}), **({"pageToken": token} if token else {})}
        page = dataflow_get(project, region, params=params, session=session)
        yield page
        token = page.get("nextPageToken")
        if not token:
            return


def get_job(project: str, region: str, job_id: str, session=None) -> dict:
    """`jobs.get` of one job (its summary view: id, name, currentState, createTime, …)."""
    return dataflow_get(project, region, job_id, {"view": "JOB_VIEW_SUMMARY"}, session)
