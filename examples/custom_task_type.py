"""Define a task type and run it in-process, without a server.

python examples/custom_task_type.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

from conveyor import Conveyor, Settings, TaskContext, task


class CountWords(BaseModel):
    text: str = Field(min_length=1)


@task("examples.count_words", params=CountWords, max_retries=2)
def count_words(ctx: TaskContext, text: str) -> dict[str, int]:
    words = text.split()
    for i, _ in enumerate(words, 1):
        ctx.progress(100 * i / len(words), f"word {i} of {len(words)}")
    return {"words": len(words)}


if __name__ == "__main__":
    with Conveyor(Settings(data_dir=Path(tempfile.mkdtemp()))) as app:
        task_id = app.manager.submit("examples.count_words", text="the quick brown fox")
        record = app.manager.wait(task_id, timeout=30)
        print(record.state, record.result)
