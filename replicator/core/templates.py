"""Templates: ``"opponents:{owner}"`` patterns that match Redis keys and render attribute values. Pure.

Below both the config (which checks the rules' templates when it is loaded) and the mapping (which compiles them), so
neither has to import the other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")
_GLOB_SPECIAL = re.compile(rb"([*?\[\]\\])")


@dataclass(frozen=True)
class Template:
    """``"opponents:{owner}"``: literal text with ``{name}`` placeholders; ``{{`` and ``}}`` are literal braces.

    Used both to match Redis keys (placeholders capture at least one byte, leftmost shortest) and to render
    attribute values.
    """

    text: str
    parts: tuple[tuple[bool, str], ...]  # (is_placeholder, literal text or placeholder name)
    regex: re.Pattern[bytes]

    @classmethod
    def parse(cls, text: str) -> Template:
        parts: list[tuple[bool, str]] = []
        literal = ""
        pos = 0
        for m in _PLACEHOLDER.finditer(text):
            literal += text[pos : m.start()]
            pos = m.end()
            token = m.group(0)
            if token in ("{{", "}}"):
                literal += token[0]
            elif m.group(1) is None:
                raise ValueError(f"stray {token!r} in {text!r}; write {token * 2!r} for a literal brace")
            else:
                if literal:
                    parts.append((False, literal))
                    literal = ""
                if parts and parts[-1][0]:
                    raise ValueError(
                        f"placeholders {{{parts[-1][1]}}} and {{{m.group(1)}}} in {text!r} need text between them"
                    )
                parts.append((True, m.group(1)))
        literal += text[pos:]
        if literal:
            parts.append((False, literal))
        names = [name for is_var, name in parts if is_var]
        if len(names) != len(set(names)):
            raise ValueError(f"a placeholder appears twice in {text!r}")
        regex = b"".join(
            b"(?P<%s>.+?)" % name.encode() if is_var else re.escape(name.encode()) for is_var, name in parts
        )
        return cls(text, tuple(parts), re.compile(regex, re.DOTALL))

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(name for is_var, name in self.parts if is_var)

    @cached_property
    def single(self) -> str | None:
        """The placeholder name when the template is exactly one placeholder (``"{score}"``)."""
        if len(self.parts) == 1 and self.parts[0][0]:
            return self.parts[0][1]
        return None

    def match(self, value: bytes) -> dict[str, bytes] | None:
        m = self.regex.fullmatch(value)
        return m.groupdict() if m else None

    def render(self, values: Mapping[str, bytes]) -> bytes:
        single = self.single
        if single is not None:  # the common "{owner}" / "{key}": no join (this runs for every captured event)
            return values[single]
        return b"".join(values[name] if is_var else name.encode() for is_var, name in self.parts)

    def glob(self, values: Mapping[str, bytes] | None = None) -> bytes:
        """The Redis glob (PSUBSCRIBE, SCAN MATCH) that selects at least every key this template matches.

        Placeholders given in ``values`` are fixed to them (``opponents:{owner}`` with owner=42 → ``opponents:42``).
        """
        values = values or {}
        return b"".join(
            _GLOB_SPECIAL.sub(rb"\\\1", values[name]) if is_var and name in values else b"*" if is_var
            else _GLOB_SPECIAL.sub(rb"\\\1", name.encode())
            for is_var, name in self.parts
        )


def glob_to_template(glob: str) -> Template:
    """Only ``prefix*`` / ``*`` globs are supported for the mirror rule (a regex would be clearer than full globs)."""
    if glob.count("*") > 1 or (glob and "*" in glob and not glob.endswith("*")) or any(c in glob for c in "?[]"):
        raise ValueError(f"{glob!r}: only 'prefix*' or '*' is supported")
    if glob.endswith("*"):
        return Template.parse(glob[:-1].replace("{", "{{").replace("}", "}}") + "{rest}")
    return Template.parse(glob.replace("{", "{{").replace("}", "}}"))
