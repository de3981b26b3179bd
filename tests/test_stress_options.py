"""``safe-rotating-stress`` with time rotation, compression, existing backups and retention:
each at 8 processes, with the full verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from safe_rotating.stress import main

pytestmark = pytest.mark.multiprocess


@pytest.mark.parametrize(
    ("options", "expect"),
    [
        (["--when", "S", "--interval", "1", "--max-bytes", "16KiB", "--duration", "3"], ""),
        (
            ["--when", "S", "--max-bytes", "16KiB", "--duration", "3", "--compress", "gzip"],
            "backups compressed",
        ),
        (["--max-bytes", "16KiB", "--compress", "gzip", "--duration", "2"], "backups compressed"),
        (["--max-bytes", "8KiB", "--precreate", "1000"], "1000 records of earlier backups kept"),
        (["--max-bytes", "16KiB", "--precreate", "100", "--max-age", "30m"], "earlier backups"),
        (["--max-bytes", "16KiB", "--precreate", "100", "--max-total-bytes", "1MiB"], ""),
    ],
)
def test_each_option_passes_at_eight_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], expect: str
) -> None:
    argv = ["-p", "8", "-n", "1500", "--dir", str(tmp_path), *options]
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS: " in out
    assert expect in out


def test_max_age_removed_the_old_backups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Precreated backups were last written 1 to 100 minutes ago; 30m keeps about 30."""
    argv = ["-p", "8", "-n", "500", "--max-bytes", "1MiB", "--dir", str(tmp_path)]
    assert main([*argv, "--precreate", "100", "--max-age", "30m"]) == 0
    out = capsys.readouterr().out
    kept = int(out.split(" records of earlier backups kept")[0].rsplit(" ", 1)[1].strip("[; "))
    assert 25 <= kept <= 31, out
