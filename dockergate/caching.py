"""A memo for the request path's pure functions, bounded in bytes as well as entries.

The gate memoises what a client repeats (the same few paths and list queries), but
a request line may be up to a whole head (256 KiB) long: an LRU cache of 4,096
such keys could hold a gigabyte, filled by a caller the gate has not identified
yet. Calls whose text arguments are long are computed each time instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])

LONGEST_KEY = 1024  # characters of text arguments, in all, for a call to be memoised


def short_calls_cached(maxsize: int, longest: int = LONGEST_KEY) -> Callable[[F], F]:
    """``functools.lru_cache(maxsize)`` for functions of ``str`` arguments only, for
    calls whose arguments add up to at most ``longest`` characters; longer ones are
    computed and not kept. (A plain loop: it runs twice per request.)"""

    def wrap(fn: F) -> F:
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def call(*args: str) -> Any:
            size = 0
            for arg in args:
                size += len(arg)
            if size > longest:
                return fn(*args)
            return cached(*args)

        return cast(F, call)

    return wrap
