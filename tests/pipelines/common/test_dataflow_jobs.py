"""Job names, job lookup and waiting, against responses shaped as the Dataflow REST API documents them
(v1b3 `projects.locations.jobs.list` pages with `nextPageToken`, `jobs.get` Job resources), recorded in
`dataflow_responses/`; the HTTP session and the clock are fakes."""
import json
from pathlib import Path

import pytest

from pipelines.common import dataflow_jobs as jobs
from pipelines.config import load_config

RESPONSES = Path(__file__).parent / "dataflow_responses"
EMBED_JOB = "posters-embed-20261201-3f2a9c41d0be"


def recorded(name: str):
    return json.loads((RESPONSES / name).read_text())


class FakeResponse:
    def __init__(self, body, status=200):
        self.body, self.status_code = body, status

    def json(self):
        return self.body

    def raise_for_status(self):
        if self.status_code >= 400:
            import requests

            raise requests.HTTPError(f"{self.status_code}", response=self)


class FakeSession:
    """Answers GETs from a table {(url, pageToken or None): body} and records each request."""

    def __init__(self, answers):
        self.answers, self.requests = answers, []

    def get(self, url, params=None, timeout=None):
        self.requests.append((url, dict(params or {})))
        key = (url, (params or {}).get("pageToken"))
        return FakeResponse(self.answers[key]) if key in self.answers else FakeResponse({"error": {}}, 404)


class FakeClock:
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


LIST_URL = "https://dataflow.googleapis.com/v1b3/projects/poster-prod/locations/us-central1/jobs"


# --- names and fingerprints -------------------------------------------------------------------------------------

def test_job_name_is_deterministic_and_a_valid_dataflow_job_name():
    fingerprint = jobs.config_fingerprint({"embed": {"max_batch_size": 128}}, {"catalog": "gs://b/c.csv"})
    name = jobs.job_name("embed", "2026-12-01", fingerprint)
    assert name == jobs.job_name("embed", "2026-12-01", fingerprint)
    assert name == f"posters-embed-20261201-{fingerprint[:12]}"
    assert jobs.JOB_NAME.match(name)


def test_job_name_cleans_the_stage_and_refuses_a_fingerprint_that_is_not_hex():
    assert jobs.job_name("Check_GPU", "2026-01-02", "ABCDEF0123456789").startswith("posters-check-gpu-20260102-")
    with pytest.raises(ValueError, match="hexadecimal"):
        jobs.job_name("embed", "2026-12-01", "not-hex")


def test_the_fingerprint_ignores_key_order_and_changes_with_any_config_value_or_input():
    config = load_config("configs/dataflow.yaml").model_dump(mode="json")
    inputs = {"catalog": "gs://b/catalog.csv", "model": "gs://b/model"}
    same = jobs.config_fingerprint(dict(reversed(list(config.items()))), dict(reversed(list(inputs.items()))))
    assert jobs.config_fingerprint(config, inputs) == same
    changed_config = load_config("configs/dataflow.yaml", ["embed.max_batch_size=64"]).model_dump(mode="json")
    assert jobs.config_fingerprint(changed_config, inputs) != same
    assert jobs.config_fingerprint(config, {**inputs, "model": "gs://b/model-2"}) != same


# --- find_job ---------------------------------------------------------------------------------------------------

def test_find_job_returns_the_newest_running_or_done_job_of_that_name_across_pages():
    pages = [recorded("jobs_list_page1.json"), recorded("jobs_list_page2.json")]
    found = jobs.find_job(EMBED_JOB, pages)
    # Three jobs have that name: running (02:41), failed (02:31) and done yesterday; the running one is newest.
    assert found["id"] == "2026-12-01_02_41_07-8411936245017093311"
    assert found["currentState"] == "JOB_STATE_RUNNING"


def test_find_job_skips_failed_and_cancelled_jobs():
    page2 = recorded("jobs_list_page2.json")
    assert jobs.find_job(EMBED_JOB, [page2])["id"] == "2026-11-30_02_30_09-5519364480273917054"  # the done one
    assert jobs.find_job("posters-candidates-20261201-c0ffee123456", [page2]) is None  # only a cancelled one
    assert jobs.find_job("posters-none", [recorded("jobs_list_page1.json"), page2]) is None
    assert jobs.find_job(EMBED_JOB, [{}]) is None  # a page with no jobs carries no `jobs` key


def test_list_job_pages_follows_next_page_token_and_asks_for_the_name():
    page1, page2 = recorded("jobs_list_page1.json"), recorded("jobs_list_page2.json")
    session = FakeSession({(LIST_URL, None): page1, (LIST_URL, page1["nextPageToken"]): page2})
    pages = list(jobs.list_job_pages("poster-prod", "us-central1", EMBED_JOB, session=session))
    assert pages == [page1, page2]
    assert session.requests == [
        (LIST_URL, {"filter": "ALL", "name": EMBED_JOB}),
        (LIST_URL, {"filter": "ALL", "name": EMBED_JOB, "pageToken": page1["nextPageToken"]}),
    ]
    assert jobs.find_job(EMBED_JOB, pages)["currentState"] == "JOB_STATE_RUNNING"


def test_get_job_calls_jobs_get_and_raises_on_an_error_status():
    import requests

    job = recorded("jobs_get_until_done.json")[-1]
    session = FakeSession({(f"{LIST_URL}/{job['id']}", None): job})
    assert jobs.get_job("poster-prod", "us-central1", job["id"], session=session) == job
    assert session.requests == [(f"{LIST_URL}/{job['id']}", {"view": "JOB_VIEW_SUMMARY"})]
    with pytest.raises(requests.HTTPError):
        jobs.get_job("poster-prod", "us-central1", "no-such-job", session=session)


# --- wait_for_job -----------------------------------------------------------------------------------------------

def polled(name):
    """A `get` that answers the recorded responses in order, and the ids it was asked for."""
    answers, asked = iter(recorded(name)), []

    def get(job_id):
        asked.append(job_id)
        return next(answers)
    return get, asked


def test_wait_for_job_polls_until_done_and_returns_the_job():
    get, asked = polled("jobs_get_until_done.json")
    clock = FakeClock()
    job = jobs.wait_for_job("2026-12-01_02_41_07-8411936245017093311", get, poll_s=30, clock=clock,
                            sleep=clock.sleep)
    assert job["currentState"] == "JOB_STATE_DONE"
    assert len(asked) == 5 and clock.sleeps == [30] * 4  # queued, pending, running, running, done


def test_wait_for_job_raises_job_failed_for_a_failed_job():
    get, asked = polled("jobs_get_until_failed.json")
    clock = FakeClock()
    with pytest.raises(jobs.JobFailed, match="JOB_STATE_FAILED") as failure:
        jobs.wait_for_job("2026-12-01_02_41_07-8411936245017093311", get, clock=clock, sleep=clock.sleep)
    assert failure.value.job["id"] == "2026-12-01_02_41_07-8411936245017093311" and len(asked) == 2


def test_wait_for_job_gives_up_after_its_timeout():
    running = recorded("jobs_get_until_done.json")[2]
    clock = FakeClock()
    with pytest.raises(TimeoutError, match="still JOB_STATE_RUNNING after 100 s"):
        jobs.wait_for_job(running["id"], lambda _: running, poll_s=30, timeout_s=100, clock=clock,
                          sleep=clock.sleep)
    assert clock.now <= 100


# --- reusable_job: what a rerun waits for -----------------------------------------------------------------------

def test_a_rerun_reuses_the_recorded_job_while_it_runs_without_listing_jobs():
    running = recorded("jobs_get_until_done.json")[2]
    assert running["currentState"] == "JOB_STATE_RUNNING"

    def list_pages():
        raise AssertionError("the recorded job is running: no jobs.list needed")
    found = jobs.reusable_job(EMBED_JOB, running["id"], {running["id"]: running}.__getitem__, list_pages)
    assert found == running


def test_a_rerun_whose_recorded_job_failed_looks_for_another_job_of_that_name():
    failed = recorded("jobs_get_until_failed.json")[-1]
    pages = [recorded("jobs_list_page1.json"), recorded("jobs_list_page2.json")]
    found = jobs.reusable_job(EMBED_JOB, failed["id"], {failed["id"]: failed}.__getitem__, lambda: pages)
    assert found["id"] == "2026-12-01_02_41_07-8411936245017093311" and found["currentState"] == "JOB_STATE_RUNNING"
    assert jobs.reusable_job(EMBED_JOB, failed["id"], {failed["id"]: failed}.__getitem__, lambda: [{}]) is None


def test_a_recorded_job_of_another_name_is_not_reused():
    done = recorded("jobs_get_until_done.json")[-1]
    assert done["currentState"] == "JOB_STATE_DONE"
    assert jobs.reusable_job("posters-embed-20261202-aaaaaaaaaaaa", done["id"], {done["id"]: done}.__getitem__,
                             lambda: [recorded("jobs_list_page1.json")]) is None
