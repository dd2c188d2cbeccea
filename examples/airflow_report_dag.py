"""An Airflow DAG whose last task sends a PNG chart and a CSV report through Herald, in one
message, to a Slack channel (uploaded as files) and an email list (chart inline, CSV
attached). Destinations `alerts-api` (slack, token + channel) and `reports` (email) are
declared in herald.toml; the token needs the `send` scope.

Connection: set the Airflow Variables `herald_url` (e.g. http://herald:8080) and
`herald_token` (a `send`-scoped token).
"""

import base64
import json
import urllib.request
from datetime import datetime

from airflow.decorators import dag, task
from airflow.models import Variable


def attachment(path: str, content_type: str, inline: bool = False) -> dict:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    name = path.rsplit("/", 1)[-1]
    return {"filename": name, "content_type": content_type, "data": data, "inline": inline}


@dag(schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False)
def daily_sales_report():
    @task
    def build_report() -> dict:
        # ... render /tmp/chart.png and /tmp/report.csv here ...
        return {"chart": "/tmp/chart.png", "csv": "/tmp/report.csv", "rows": 1200}

    @task
    def notify(report: dict, ds=None):
        message = {
            "event_type": "report.ready",
            "title": f"Daily sales {ds}",
            "text": f"{report['rows']} rows loaded",
            "to": ["alerts-api", "reports"],
            # Retrying this task must not send the report twice.
            "idempotency_key": f"daily_sales/{ds}",
            "attachments": [
                attachment(report["chart"], "image/png", inline=True),
                attachment(report["csv"], "text/csv"),
            ],
        }
        req = urllib.request.Request(
            Variable.get("herald_url") + "/api/v1/messages",
            data=json.dumps(message).encode("utf-8"),
            headers={
                "Authorization": "Bearer " + Variable.get("herald_token"),
                "Content-Type": "application/json",
            },
            method="POST",
        )
        # 202 once the message is durably stored; a 422 names the bad field.
        with urllib.request.urlopen(req, timeout=30) as resp:
            print(json.load(resp))

    notify(build_report())


daily_sales_report()
