"""Notice templates: `{name}`-style placeholders, checked before anything is sent.

Notice-wide values (`fields`, e.g. {deadline}) are substituted here; per-recipient values
({name}, {child_name}) become markers that the fan-out SQL replaces row by row, so a 100,000-inbox
sending stays one INSERT ... SELECT. A placeholder with no value is refused (INVALID_ARGUMENT naming
`fields.<placeholder>`): a notice never goes out with a blank in its text.
"""

from __future__ import annotations

import string

from server.errors import FieldViolation, InvalidArgument

MARK = "\x1f"  # unit separator: cannot come from a template (refused below)
MAX_FIELD_VALUE = 500


def marker(name: str) -> str:
    return f"{MARK}{name}{MARK}"


def placeholders(template: str, field: str) -> list[str]:
    """The placeholder names of `template`, in order; a malformed template is INVALID_ARGUMENT."""
    if MARK in template:
        raise InvalidArgument.field(field, "contains a control character")
    names = []
    try:
        for _, name, spec, conversion in string.Formatter().parse(template):
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                raise InvalidArgument.field(field, f"placeholder {{{name}}} must be a plain name like {{name}}")
            names.append(name)
    except ValueError as error:  # unbalanced braces
        raise InvalidArgument.field(field, f"malformed template ({error}); write {{{{ for a literal brace}}") from None
    return names


def prepare(templates: dict[str, str], values: dict[str, str], row_fields: frozenset[str]) -> dict[str, str]:
    """Substitute notice-wide values, mark per-recipient fields; refuse anything missing."""
    missing: list[FieldViolation] = []
    for key, value in values.items():
        if len(value) > MAX_FIELD_VALUE:
            raise InvalidArgument.field(f"fields.{key}", f"at most {MAX_FIELD_VALUE} characters")
    out = {}
    for field, template in templates.items():
        mapping = {}
        for name in placeholders(template, field):
            if name in row_fields:
                mapping[name] = marker(name)
            elif values.get(name, "").strip():
                mapping[name] = values[name]
            elif not any(v.field == f"fields.{name}" for v in missing):
                missing.append(FieldViolation(
                    f"fields.{name}", f"the template uses {{{name}}} but no value is given for this audience"))
        if not missing:
            out[field] = template.format_map(mapping)
    if missing:
        raise InvalidArgument.fields(missing, reason="TEMPLATE_FIELD_MISSING")
    return out


def render_sql(column_sql: str, row_values: dict[str, str]) -> str:
    """SQL that replaces each marker in `column_sql` (a ? parameter) by a per-row SQL expression."""
    sql = column_sql
    for name, expression in row_values.items():
        sql = f"replace({sql}, '{marker(name)}', {expression})"
    return sql
