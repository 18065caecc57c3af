"""Plumbing shared by the atheris harnesses: seeds, crash records, structure-aware inputs.

A harness runs three ways::

    python fuzz/fuzz_x.py --write-seeds DIR          write its seed corpus (generated in code) and exit
    python fuzz/fuzz_x.py [libFuzzer flags] [DIR...]  fuzz (DIR: corpus), or replay crash files
    python fuzz/run.py --seconds 60                   every harness in turn, with a summary

A crash is any exception other than the surface's documented error (the harness catches that one)
and any broken property (an ``AssertionError``). With ``SWARMUPDATE_FUZZ_CRASH_DIR`` set, as
``run.py`` sets it, each distinct crash (exception type and innermost swarmupdate frame) is written
there once, as ``crash-<harness>-<id>`` (the input) and ``.txt`` (the traceback), and fuzzing goes on,
so that one run counts every crash it finds. Without it the exception goes up to libFuzzer, which
stops and writes the input: the usual way to replay one (``python fuzz/fuzz_x.py crash-file``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import atheris

__all__ = [
    "CRASH_DIR_ENV",
    "INSTRUMENT",
    "SEEDS_DIR_ENV",
    "json_fragment",
    "json_object",
    "main",
    "mode_and_rest",
    "mutate_object",
]

CRASH_DIR_ENV = "SWARMUPDATE_FUZZ_CRASH_DIR"
#: when set, the harness writes its seeds there before fuzzing (run.py points it at the corpus)
SEEDS_DIR_ENV = "SWARMUPDATE_FUZZ_SEEDS_DIR"
#: the packages whose branches guide the fuzzer (pure-Python parts; json's scanner is in C)
INSTRUMENT = ["swarmupdate", "h11", "tomllib", "urllib", "ipaddress", "json"]

TestOneInput = Callable[[bytes], None]


def mode_and_rest(data: bytes, modes: int) -> tuple[int, bytes]:
    """The first byte picks one of ``modes`` ways to use the rest (seeds start with that byte)."""
    if not data:
        return 0, b""
    return data[0] % modes, data[1:]


def json_fragment(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> bytes:
    """One JSON value as text, biased to what breaks decoders: huge numbers, deep nesting,
    non-finite constants, odd strings, and sometimes raw bytes that are not JSON at all."""
    kind = fdp.ConsumeIntInRange(0, 13)
    if kind == 0:
        return str(fdp.ConsumeInt(8)).encode()
    if kind == 1:  # an integer of up to 6000 digits: past float range, past int-from-str limits
        return b"-" * fdp.ConsumeIntInRange(0, 1) + b"9" * fdp.ConsumeIntInRange(1, 6000)
    if kind == 2:
        return repr(fdp.ConsumeFloat()).encode().replace(b"nan", b"NaN").replace(b"inf", b"Infinity")
    if kind == 3:
        return fdp.PickValueInList([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-0", b"1e-999"])
    if kind == 4:
        return json.dumps(fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 80))).encode()
    if kind == 5:
        return fdp.PickValueInList([b"true", b"false", b"null", b"0", b"1", b"-1", b'""', b"[]", b"{}"])
    if kind == 6:  # nesting deeper than any decoder allows, closed or not
        n = fdp.ConsumeIntInRange(1, 3000)
        opener, closer = fdp.PickValueInList([(b"[", b"]"), (b'{"a":', b"}")])
        return opener * n + (closer * n if fdp.ConsumeBool() else b"")
    if kind == 7 and depth < 3:
        items = [json_fragment(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
        return b"[" + b",".join(items) + b"]"
    if kind == 8 and depth < 3:
        keys = [fdp.ConsumeUnicode(8) for _ in range(fdp.ConsumeIntInRange(0, 4))]
        return json_object({k: json_fragment(fdp, depth + 1) for k in keys})
    if kind == 9:
        return b'"' + b"\\ud800" * fdp.ConsumeIntInRange(1, 3) + b'"'  # lone surrogates
    if kind == 10:
        return json.dumps("a" * fdp.ConsumeIntInRange(0, 5000)).encode()
    if kind == 11:  # a 64-hex digest: the only form many fields accept
        return json.dumps(fdp.ConsumeBytes(32).hex().ljust(64, "0")).encode()
    return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))


def json_object(fields: dict[str, bytes]) -> bytes:
    """A JSON object from keys and already-encoded values."""
    return b"{" + b",".join(json.dumps(k).encode() + b":" + v for k, v in fields.items()) + b"}"


def mutate_object(doc: dict[str, object], fdp: atheris.FuzzedDataProvider) -> bytes:
    """``doc`` as JSON with one to three fields replaced, dropped or added (keys from ``doc`` mostly)."""
    fields = {k: json.dumps(v).encode() for k, v in doc.items()}
    keys = list(doc)
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        key = fdp.PickValueInList(keys) if keys and fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeUnicode(6)
        if fdp.ConsumeIntInRange(0, 5) == 0:
            fields.pop(key, None)
        else:
            fields[key] = json_fragment(fdp)
    return json_object(fields)


def _signature(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f"{os.sep}swarmupdate{os.sep}" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__}@{where}"


def _recording(name: str, test: TestOneInput, crash_dir: Path) -> TestOneInput:
    seen: set[str] = set()

    def guarded(data: bytes) -> None:
        try:
            test(data)
        except Exception as exc:  # noqa: BLE001 - every escaping exception is a finding
            sig = _signature(exc)
            if sig in seen:
                return
            seen.add(sig)
            ident = hashlib.sha1(sig.encode()).hexdigest()[:10]  # noqa: S324 - a name, not security
            (crash_dir / f"crash-{name}-{ident}").write_bytes(data)
            text = "".join(traceback.format_exception(exc))
            (crash_dir / f"crash-{name}-{ident}.txt").write_text(f"{sig}\n\n{text}")
            print(f"\n=== {name}: new crash {sig}\n{text}", file=sys.stderr, flush=True)

    return guarded


def _write_seeds(seeds: Iterable[bytes], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds):
        (out / f"seed-{i:03d}").write_bytes(seed)


def main(test: TestOneInput, seeds: Callable[[], Iterable[bytes]], argv: Sequence[str] | None = None) -> None:
    """Write the seeds (``--write-seeds DIR``) or fuzz ``test`` with libFuzzer's arguments."""
    args = list(sys.argv if argv is None else argv)
    name = Path(args[0]).stem.removeprefix("fuzz_")
    if len(args) == 3 and args[1] == "--write-seeds":
        _write_seeds(seeds(), Path(args[2]))
        return
    if os.environ.get(SEEDS_DIR_ENV):  # run.py: the seeds in this same process, then fuzz
        _write_seeds(seeds(), Path(os.environ[SEEDS_DIR_ENV]))
    # imported here, not at the top: the harness instruments swarmupdate when it imports it
    from swarmupdate.obs.logging import configure_logging

    configure_logging("critical", json=True)  # a rejected input is logged: millions of lines otherwise
    crash_dir = os.environ.get(CRASH_DIR_ENV)
    if crash_dir:
        Path(crash_dir).mkdir(parents=True, exist_ok=True)
        test = _recording(name, test, Path(crash_dir))
    atheris.Setup(args, test)
    atheris.Fuzz()
