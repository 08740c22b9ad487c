"""Submit a task to a running `conveyor serve` and poll its status until it ends.

python examples/submit_and_poll.py [http://127.0.0.1:8000]
"""

from __future__ import annotations

import sys
import time

import httpx

url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
with httpx.Client(base_url=url) as client:
    created = client.post("/api/v1/tasks", json={"task_type": "system.sleep", "params": {"seconds": 3, "steps": 6}})
    created.raise_for_status()
    task_id = created.json()["task_id"]
    print("submitted", task_id)
    while True:
        status = client.get(f"/api/v1/tasks/{task_id}/status/").json()
        print(f"{status['status']:<10} {status['progress']:5.1f}%  {status['message']}")
        if status["status"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            break
        time.sleep(0.5)
    print(client.get(f"/api/v1/tasks/{task_id}/result/").json())
