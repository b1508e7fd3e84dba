"""A function run for several names at once (hosts, routers on hosts): every call ends before the answer, then
one error names each that failed, so a partial failure is never hidden behind the first one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from .errors import BluegreenError, TargetError

T = TypeVar("T")


class NamedErrors(TargetError):
    """Some of several failed: one line, `app2: why; app3: why`; `errors` by name."""

    def __init__(self, errors: dict[str, BluegreenError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) if str(e).startswith(f"{n}: ") else f"{n}: {e}" for n, e in errors.items()))


def at_once(names: list[str], fn: Callable[[str], T], threads: str = "bluegreen") -> dict[str, T]:
    """`fn(name)` for every name at once (threads named `threads`); the results by name once all ended, else one
    NamedErrors."""
    results: dict[str, T] = {}
    errors: dict[str, BluegreenError] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(names)), thread_name_prefix=threads) as pool:
        futures = {name: pool.submit(fn, name) for name in names}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except BluegreenError as exc:
                errors[name] = exc
    if errors:
        raise NamedErrors(errors)
    return results
