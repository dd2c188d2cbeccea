"""herald.airflow in real Apache Airflow (runs only where apache-airflow is installed).

Airflow is not in requirements-test.txt (it is huge), so CI skips this module. It passes
with apache-airflow 3.3.2 and 2.10.5 (CPython 3.11). To run it:

    python3 -m venv target/airflow-venv
    target/airflow-venv/bin/pip install apache-airflow==3.3.2 pytest==9.2.0 -e clients/python
    cargo build -p herald
    cd clients/python && HERALD_BIN=$PWD/../../target/debug/herald \\
        ../../target/airflow-venv/bin/python -m pytest tests/test_airflow_real.py -v

Each scenario runs `dag.test()` in a fresh interpreter with its own AIRFLOW_HOME (a SQLite
metadata database migrated once per module) and the Connection `herald` given as
AIRFLOW_CONN_HERALD, pointing at the test's `herald serve`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Dict

import pytest

pytest.importorskip(
    "airflow",
    reason="apache-airflow is not installed (it is too big for CI); see this module's docstring to run it",
)

from support import REPO_ROOT, wait_until  # noqa: E402

EXAMPLE_DAG = REPO_ROOT / "examples" / "airflow_dag.py"

RUN_DAG = r"""
import json, os, sys
try:
    from airflow.dag_processing.dagbag import DagBag  # Airflow 3.x
except ImportError:
    from airflow.models.dagbag import DagBag  # Airflow 2.x

bag = DagBag(dag_folder=sys.argv[1])
if bag.import_errors:
    sys.exit(f"import errors: {bag.import_errors}")
dag = bag.get_dag(sys.argv[2])
run = dag.test()
print("DAGRUN", json.dumps({"state": str(run.state), "run_id": run.run_id}))
"""


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory, herald_server, send_token) -> Dict[str, str]:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "HERALD_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW_CONN_HERALD": json.dumps(
                {"conn_type": "http", "host": "127.0.0.1", "port": herald_server.port, "schema": "http",
                 "password": send_token}
            ),
        }
    )
    (home / "dags").mkdir()
    proc = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return env


def run_dag(env: Dict[str, str], dag_file: Path, dag_id: str) -> Dict[str, str]:
    """``dag.test()`` of ``dag_id`` from ``dag_file`` (copied into the DAGs folder: Airflow 3
    runs only DAGs of a configured bundle)."""
    dags = Path(env["AIRFLOW__CORE__DAGS_FOLDER"])
    if dag_file.parent != dags:
        dag_file = Path(shutil.copy(dag_file, dags / dag_file.name))
    proc = subprocess.run(
        [sys.executable, "-c", RUN_DAG, str(dag_file), dag_id], env=env, capture_output=True, text=True, timeout=600
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("DAGRUN ")][-1]
    result = json.loads(line[len("DAGRUN "):])
    result["log"] = out
    return result


def run_templated_dag(env: Dict[str, str], server, receiver, prefix: str, source: str):
    """Writes ``source`` (with DAG_ID and DEST filled in) as a DAG whose Herald destination is
    a webhook to ``receiver``, and runs it. Returns (dag_id, destination, dag file, run)."""
    dest = f"af-{prefix}-{uuid.uuid4().hex[:6]}"
    dag_id = f"{prefix}_{uuid.uuid4().hex[:6]}"
    server.put_destination(dest, {"kind": "webhook", "url": receiver.url})
    path = Path(env["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{dag_id}.py"
    path.write_text(textwrap.dedent(source.replace("DAG_ID", dag_id).replace("DEST", dest)))
    return dag_id, dest, path, run_dag(env, path, dag_id)


def test_example_dag_delivers_the_messenger_message(airflow_env, herald_server, receiver, slack):
    herald_server.put_destination(
        "rise",
        {
            "kind": "http",
            "url": receiver.url + "/api/v1/message",
            "headers": {"Authorization": "Bearer ${env:HERALD_SECRET_RISE_TOKEN}"},
            "body_template": '{"chatroomId": {{ payload.chatroom_id|tojson }}, "msgType": "TEXT", "chatMsg": {{ text|tojson }}}',
        },
    )
    herald_server.put_destination("oncall-slack", {"kind": "slack", "url": slack.url + "/services/T/B/X"})
    run = run_dag(airflow_env, EXAMPLE_DAG, "daily_sales_to_messenger")
    assert run["state"].endswith("success"), run["log"][-4000:]

    (req,) = receiver.wait_for(1)
    assert req.headers["authorization"] == "Bearer rise-secret-token"
    body = req.json()
    assert body["chatroomId"] == "C0123" and body["msgType"] == "TEXT"
    assert body["chatMsg"].startswith("[daily_sales] ") and "1,204 orders" in body["chatMsg"]
    (delivery,) = herald_server.deliveries("rise")
    key = herald_server.message(delivery["message_id"])["idempotency_key"]
    assert key == f"airflow:daily_sales_to_messenger:post_to_chatroom:{run['run_id']}:-1"


RETRY_DAG = """
from datetime import datetime, timedelta
from pathlib import Path

try:
    from airflow.sdk import dag  # Airflow 3.x
except ImportError:
    from airflow.decorators import dag  # Airflow 2.x
from herald.airflow import herald_task

TRIES = Path(__file__).with_suffix(".tries")


def fail_first_try(context, result):
    # The message was already accepted by Herald; the task dies afterwards on its first try.
    n = context["ti"].try_number
    with TRIES.open("a") as f:
        f.write(f"{n}\\n")
    if n == 1:
        raise RuntimeError("worker lost after sending")


@dag(dag_id="DAG_ID", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def retrying():
    @herald_task(to="DEST", retries=2, retry_delay=timedelta(seconds=0), post_execute=fail_first_try)
    def send() -> str:
        return "sent once, whatever Airflow retries"

    send()


retrying()
"""


def test_a_retried_task_does_not_duplicate_its_message(airflow_env, herald_server, receiver):
    dag_id, dest, path, run = run_templated_dag(airflow_env, herald_server, receiver, "retry", RETRY_DAG)
    assert run["state"].endswith("success"), run["log"][-4000:]
    assert path.with_suffix(".tries").read_text().split() == ["1", "2"]  # Airflow really retried

    (req,) = receiver.wait_for(1)
    assert req.json()["text"] == "sent once, whatever Airflow retries"
    deliveries = herald_server.deliveries(dest)
    assert len(deliveries) == 1  # try 2 was answered with try 1's message
    key = herald_server.message(deliveries[0]["message_id"])["idempotency_key"]
    assert key == f"airflow:{dag_id}:send:{run['run_id']}:-1"


FAILING_DAG = """
from datetime import datetime

try:
    from airflow.sdk import dag, task  # Airflow 3.x
except ImportError:
    from airflow.decorators import dag, task  # Airflow 2.x
from herald.airflow import HeraldNotifier


@dag(dag_id="DAG_ID", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def failing():
    @task(retries=0, on_failure_callback=HeraldNotifier(
        to="DEST", title="Airflow: {{ ti.dag_id }}",
        text="{{ ti.task_id }} failed on try {{ ti.try_number }}: {{ exception }}"))
    def load_rows():
        raise ValueError("warehouse refused the connection")

    load_rows()


failing()
"""


def test_notifier_as_failure_callback_renders_the_context(airflow_env, herald_server, receiver):
    dag_id, dest, _, run = run_templated_dag(airflow_env, herald_server, receiver, "failing", FAILING_DAG)
    assert run["state"].endswith("failed"), run["log"][-4000:]

    (req,) = receiver.wait_for(1)
    body = req.json()
    assert body["text"] == "load_rows failed on try 1: warehouse refused the connection"
    assert body["title"] == f"Airflow: {dag_id}"
    assert body["severity"] == "error" and body["type"] == "airflow.task"
    assert body["data"]["dag_id"] == dag_id and body["data"]["run_id"] == run["run_id"]
    wait_until(lambda: herald_server.deliveries(dest), what="the delivery")
