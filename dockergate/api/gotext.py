"""Go's text rules where dockerd's reading of a value depends on them.

Python's ``str.strip()`` and ``str.isspace()`` take more characters as space than Go's
``unicode.IsSpace`` (``\\x1c``-``\\x1f``): text trimmed the Python way can read as another
value to dockerd (``pull=%1Cfalse``)."""

from __future__ import annotations

# unicode.IsSpace: tab, newline, vertical tab, form feed, carriage return, space, U+0085,
# U+00A0 and the other Unicode White_Space characters.
GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
