"""`logs -f` redaction: a secret split across two chunks of the stream is still replaced."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runyard.core.secrets import StreamRedactor, redact_bytes

SECRETS = {"HF_TOKEN": "hf_s3cr3tTOKENvalue"}


def stream(chunks: list[bytes]) -> bytes:
    redactor = StreamRedactor(SECRETS)
    return b"".join(redactor.feed(chunk) for chunk in chunks) + redactor.flush()


def test_a_secret_cut_in_two_by_the_stream_is_replaced() -> None:
    chunks = [b"step 1 token=hf_s3cr3t", b"TOKENvalue loss=0.5\n"]
    assert stream(chunks) == b"step 1 token=*** loss=0.5\n"


def test_nothing_is_held_back_when_no_secret_could_be_starting() -> None:
    redactor = StreamRedactor(SECRETS)
    assert redactor.feed(b"loss=0.5\n") == b"loss=0.5\n"
    assert redactor.feed(b"token=hf_s3") == b"token="  # could be the start of the token
    assert redactor.feed(b"x\n") == b"hf_s3x\n"  # it was not


@given(
    before=st.binary(max_size=40),
    after=st.binary(max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=6),
)
def test_any_cut_of_the_stream_redacts_as_the_whole_does(
    before: bytes, after: bytes, cuts: list[int]
) -> None:
    whole = before + SECRETS["HF_TOKEN"].encode() + after
    points = sorted({min(c, len(whole)) for c in cuts})
    chunks = [whole[a:b] for a, b in zip([0, *points], [*points, len(whole)], strict=True)]
    out = stream(chunks)
    assert out == redact_bytes(whole, SECRETS)
    assert SECRETS["HF_TOKEN"].encode() not in out
