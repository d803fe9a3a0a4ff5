"""Real `crdtkv serve` processes on one data file, for the lock and kill tests."""

from __future__ import annotations

import queue
import signal
import subprocess
import threading
from pathlib import Path

from ..helpers import serve_command

#: a hang guard for process start (an idle machine needs well under a second)
START_TIMEOUT = 60.0
SECRET = b"storage-test-secret"


class Serve:
    """A `crdtkv serve --listen ws://127.0.0.1:0 --data PATH` child, its output read by threads."""

    def __init__(
        self, data: Path, secret_file: Path, *, durability: str = "batch", replica: str = "london"
    ) -> None:
        args = serve_command(
            replica,
            "ws://127.0.0.1:0",
            "--secret-file",
            str(secret_file),
            "--data",
            str(data),
            "--durability",
            durability,
        )
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        stdout, stderr = self.process.stdout, self.process.stderr
        self._stdout_reader = threading.Thread(target=self._pump, args=(stdout,), daemon=True)
        self._stdout_reader.start()
        self._stderr_reader = threading.Thread(target=lambda: self.stderr.extend(stderr), daemon=True)
        self._stderr_reader.start()
        self.url: str | None = None

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put(line)
        self.lines.put(None)  # end of output: the process exited

    def wait_serving(self) -> str:
        """Block until the "serving ... on URL" line; return the URL (fails if the process exits first)."""
        line = self.lines.get(timeout=START_TIMEOUT)
        assert line is not None and line.startswith("serving"), f"did not start: {line!r} {self.errors()}"
        self.url = line.split()[-1]
        return self.url

    def wait_exit(self) -> int:
        code = self.process.wait(timeout=START_TIMEOUT)
        self._stderr_reader.join(timeout=START_TIMEOUT)
        return code

    def errors(self) -> str:
        if self.process.poll() is not None:
            self._stderr_reader.join(timeout=START_TIMEOUT)
        return "".join(self.stderr)

    def kill(self) -> int:
        """SIGKILL the process and reap it; return its exit status."""
        self.process.send_signal(signal.SIGKILL)
        return self.wait_exit()

    def stop(self) -> int:
        """SIGTERM (a clean shutdown) and reap; kill if it does not stop."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.wait_exit()
        except subprocess.TimeoutExpired:
            return self.kill()

    def close(self) -> None:
        """Make sure the process is gone (for ``finally``)."""
        if self.process.poll() is None:
            self.kill()
        self._stdout_reader.join(timeout=START_TIMEOUT)  # both reach end of file once the process is gone
        self._stderr_reader.join(timeout=START_TIMEOUT)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
