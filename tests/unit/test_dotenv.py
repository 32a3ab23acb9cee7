"""KEY=VALUE files (`--env-file`, ~/.env): a line that is not one is refused by line."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.core.errors import FileFormatError
from runyard.core.secrets import read_dotenv


def test_read_dotenv_takes_exports_quotes_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "creds.env"
    path.write_text("# tokens\n\nexport HF_TOKEN='hf 456'\nWANDB_API_KEY = \"w=1\"\n_X=\n")
    assert read_dotenv(path) == {"HF_TOKEN": "hf 456", "WANDB_API_KEY": "w=1", "_X": ""}


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (b"OK=1\nBAD LINE\n", 2, "expected KEY=VALUE"),
        (b"1X=2\n", 1, "'1X' is not a valid variable name"),
        (b"A-B=2\n", 1, "'A-B' is not a valid variable name"),
        (b"=value\n", 1, "'' is not a valid variable name"),
        (b"TOKEN=caf\xe9\n", None, "is not UTF-8 text"),
    ],
)
def test_read_dotenv_refuses_a_line_it_would_otherwise_drop(
    tmp_path: Path, content: bytes, line: int | None, message: str
) -> None:
    path = tmp_path / "creds.env"
    path.write_bytes(content)
    with pytest.raises(FileFormatError) as caught:
        read_dotenv(path)
    assert (caught.value.path, caught.value.line) == (path, line)
    assert message in str(caught.value)


def test_read_dotenv_takes_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "creds.env"
    path.write_bytes(b"\xef\xbb\xbfTOKEN=abc\n")  # Notepad's UTF-8
    assert read_dotenv(path) == {"TOKEN": "abc"}


def test_read_dotenv_of_a_missing_file_or_a_directory(tmp_path: Path) -> None:
    assert read_dotenv(tmp_path / "nope.env") == {}  # ~/.env is optional
    with pytest.raises(FileFormatError, match="no such file"):
        read_dotenv(tmp_path / "nope.env", missing_ok=False)
    with pytest.raises(FileFormatError, match="is a directory"):
        read_dotenv(tmp_path, missing_ok=False)


def test_secrets_from_the_operators_own_env_file_skip_lines_it_does_not_understand(
    tmp_path: Path,
) -> None:
    """~/.env belongs to the operator (and other tools): runyard takes what it can read."""
    from runyard.core.secrets import resolve_secrets

    path = tmp_path / ".env"
    path.write_text("set -a\nHF_TOKEN=hf-abc\n1X=2\n")
    assert read_dotenv(path, strict=False) == {"HF_TOKEN": "hf-abc"}
    assert resolve_secrets({"TOKEN": "HF_TOKEN"}, path) == {"TOKEN": "hf-abc"}
