"""
Backports Airflow 3.3's ``dag.test()`` support for a human-in-the-loop answer given from outside to
3.1 and 3.2 (loaded by the browser site's pipeline process; nothing on 3.3+).

Before 3.3 the in-process supervisor behind ``dag.test()`` does not know ``GetHITLDetailResponse``,
the message the HITL trigger sends to ask whether a reviewer answered: it logs "Unhandled request" and
the trigger fails. A deployed triggerer answers that message on every version
(``TriggerRunnerSupervisor._handle_request``); this makes the in-process supervisor answer it the
same way, from the same execution-API call, so the browser tests can answer a review through the
api-server on the versions the provider claims.
"""

from __future__ import annotations

from typing import Any


def install() -> bool:
    """Patch the in-process supervisor on Airflow < 3.3; whether it did."""
    from airflow import __version__

    if tuple(int(part) for part in __version__.split(".")[:2]) >= (3, 3):
        return False
    from airflow.jobs.triggerer_job_runner import HITLDetailResponseResult
    from airflow.sdk.execution_time.comms import GetHITLDetailResponse
    from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor

    original = InProcessTestSupervisor._handle_request

    def _handle_request(self: Any, msg: Any, log: Any, req_id: int) -> None:
        if isinstance(msg, GetHITLDetailResponse):
            answer = self.client.hitl.get_detail_response(ti_id=msg.ti_id)
            self.send_msg(HITLDetailResponseResult.from_api_response(response=answer), request_id=req_id)
            return
        original(self, msg, log, req_id)

    InProcessTestSupervisor._handle_request = _handle_request  # type: ignore[method-assign]
    return True
