"""kombu's filesystem transport with atomic sends.

The stock transport creates the message file under its final name and then writes it; a worker
polling the queue directory may move and read the file in between, get an empty or partial
message and stop with a JSON error (seen under load on two cores). This one writes a hidden
temporary file and renames it into the queue, so a worker only ever sees whole messages.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        # A leading dot: the worker, which matches "<anything>.<queue>.msg", skips it.
        temp = os.path.join(self.data_folder_out, f".{uuid.uuid4().hex}.tmp")
        try:
            with open(temp, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))  # type: ignore[no-untyped-call]
            os.rename(temp, os.path.join(self.data_folder_out, name))
        except OSError as exc:
            raise ChannelError(
                f"Cannot add file {name!r} to directory {self.data_folder_out!r}"
            ) from exc


class Transport(filesystem.Transport):
    Channel = Channel
