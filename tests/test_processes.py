import os
import subprocess
import sys

from distilad.processes import running


def test_running_tells_a_live_process_from_a_finished_one() -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    assert running(os.getpid()) and running(os.getppid())
    assert not running(int(finished.stdout))
    assert running(0)  # unknown (an empty lock file): counted as held
