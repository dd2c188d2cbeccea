"""The messenger pipeline as an Airflow DAG that sends through Herald (Airflow 2.6+ / 3.x).

Before Herald this task posted `{"chatroomId", "msgType": "TEXT", "chatMsg"}` to the
messenger itself with `requests.post`, kept the messenger's token in a Connection, retried by
hand and sent duplicates whenever Airflow retried the task. Now the task returns the message
and Herald delivers it: durably, retried with backoff, rate-limited, with an audit trail,
and exactly once per task run (the idempotency key is dag_id/task_id/run_id/map_index).

1. Install the client where the DAG runs (workers and DAG processor):
       pip install ./clients/python        # from a Herald checkout; distribution herald-client

2. Herald's destination for the messenger (an `http` destination; its token is read from
   Herald's environment at send time, so rotating it needs no restart):

       curl -X PUT http://herald.internal:8080/api/v1/destinations/rise \
         -H "Authorization: Bearer $HERALD_ADMIN_TOKEN" -d '{
           "kind": "http",
           "url": "https://messenger.example.com/api/v1/message",
           "headers": {"Authorization": "Bearer ${env:HERALD_SECRET_RISE_TOKEN}"},
           "body_template": "{\"chatroomId\": {{ payload.chatroom_id|tojson }}, \"msgType\": \"TEXT\", \"chatMsg\": {{ text|tojson }}}",
           "rate_limit": "1/s"
         }'

   The messenger then receives exactly what it used to:
       {"chatroomId": "C0123", "msgType": "TEXT", "chatMsg": "[daily_sales] 2026-12-01: 1,204 orders …"}

3. The Airflow Connection `herald`: Herald's address and a token with the `send` scope
   (create one with `herald tokens create airflow --scopes send`):

       airflow connections add herald --conn-type http --conn-host herald.internal \
         --conn-port 8080 --conn-schema http --conn-password hrld_…
   or  AIRFLOW_CONN_HERALD='{"conn_type": "http", "host": "herald.internal", "port": 8080,
                             "schema": "http", "password": "hrld_…"}'
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Dict, Optional

from herald.airflow import HeraldNotifier, herald_task

try:  # Airflow 3.x
    from airflow.sdk import dag, task
except ImportError:  # Airflow 2.x
    from airflow.decorators import dag, task

CHATROOM_ID = "C0123"


@dag(
    dag_id="daily_sales_to_messenger",
    schedule="0 9 * * *",
    start_date=datetime(2026, 12, 1),
    catchup=False,
    default_args={
        "retries": 3,
        "retry_delay": timedelta(minutes=2),
        # Any failed task (after its retries) alerts the on-call Slack destination.
        "on_failure_callback": HeraldNotifier(
            to="oncall-slack",
            text="{{ ti.dag_id }}.{{ ti.task_id }} failed (run {{ run_id }}, try {{ ti.try_number }}): {{ exception }}",
        ),
    },
)
def daily_sales_to_messenger():
    @task
    def summarize(ds: Optional[str] = None) -> Dict[str, Any]:
        # The real pipeline queries the warehouse here.
        return {"day": ds, "orders": 1204, "revenue": 18_250_000}

    @herald_task(to="rise", event_type="pipeline.daily_sales")
    def post_to_chatroom(summary: Dict[str, Any]) -> Dict[str, Any]:
        text = f"[daily_sales] {summary['day']}: {summary['orders']:,} orders, ₩{summary['revenue']:,} 🎉"
        # `text` becomes chatMsg and payload.chatroom_id the chatroomId (the body_template above).
        return {"text": text, "payload": {"chatroom_id": CHATROOM_ID, **summary}}

    post_to_chatroom(summarize())


daily_sales_to_messenger()
