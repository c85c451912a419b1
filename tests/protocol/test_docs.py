"""docs/protocol.md (part 2) documents every frame and every error code."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatcli.protocol import codes, frames

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def part2() -> str:
    text = DOC.read_text()
    start = text.index("## Part 2: Relay wire protocol")
    end = text.index("## Part 3", start)
    return text[start:end]


def all_tags() -> list[str]:
    out = []
    for union in (frames.ClientFrame, frames.RelayFrame):
        for cls in union.__args__:  # type: ignore[attr-defined]
            out.append(cls.__struct_config__.tag)
    return out


@pytest.mark.parametrize("tag", all_tags())
def test_every_frame_is_documented(tag: str) -> None:
    assert f"`{tag}`" in part2()


@pytest.mark.parametrize("code", sorted(codes.ALL_CODES))
def test_every_error_code_is_documented(code: str) -> None:
    assert f"| `{code}` |" in part2()
