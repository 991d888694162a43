"""Soft line wrapping for the prompt box, which Dear PyGui's multi-line text box lacks.

The box shows the text broken at its width: a break the editor makes is a no-break
space followed by a newline (``SOFT_BREAK``, invisible at a line's end), put where the
text had a space, so :func:`unwrap` turns exactly those back into the space and keeps
the user's own newlines. The stored value never holds a soft break; the box is wrapped
again when the user leaves it (Dear PyGui ignores new text for a box being typed in).
"""

from __future__ import annotations

from typing import Callable

SOFT_BREAK = "\u00a0\n"


def unwrap(shown: str) -> str:
    """The text as stored: every soft break back to the space it replaced."""
    return shown.replace(SOFT_BREAK, " ")


def wrap(text: str, fits: Callable[[str], bool]) -> str:
    """``text`` with soft breaks so each shown line ``fits`` (a word longer than a line
    stays whole on its own line); ``unwrap(wrap(t, f)) == t`` for any text without one."""
    lines = []
    for hard_line in unwrap(text).split("\n"):
        words = hard_line.split(" ")
        line = words[0]
        for word in words[1:]:
            candidate = f"{line} {word}"
            if fits(candidate) or not line:
                line = candidate
            else:
                lines.append(line + "\u00a0")
                lines.append(None)  # marks a soft break
                line = word
        lines.append(line)
        lines.append("\n")
    lines.pop()  # no newline after the last hard line
    return "".join("\n" if part is None else part for part in lines)
