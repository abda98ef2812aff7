"""The shape of a procedure in the catalogue: plain dataclasses, converted to and from the proto."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FIELD_TYPES = ("text", "kana", "integer", "boolean", "date", "time", "choice", "group", "multi_choice")
CATEGORIES = ("child_allowance", "childcare", "maternal_child_health", "single_parent", "other")
LIFE_EVENTS = ("pregnancy", "birth", "child_rearing", "single_parent", "moving", "nursery")
CONTENT_TYPES = ("image/jpeg", "image/png", "application/pdf", "image/heic")
IMAGES_AND_PDF = ("image/jpeg", "image/png", "application/pdf", "image/heic")


@dataclass(frozen=True)
class Field:
    """One form field. A `group` holds `fields`; `repeated` makes the value a JSON array."""

    name: str
    label: str
    type: str = "text"
    required: bool = False
    repeated: bool = False
    min_items: int = 0
    max_items: int = 0
    choices: tuple[tuple[str, str], ...] = ()
    min: int | None = None
    max: int | None = None
    max_length: int = 0
    pattern: str = ""
    fields: tuple["Field", ...] = ()
    help: str = ""
    computed: bool = False

    def __post_init__(self) -> None:
        assert self.type in FIELD_TYPES, self.type
        assert (self.type == "group") == bool(self.fields), self.name

    def child(self, name: str) -> "Field | None":
        return next((f for f in self.fields if f.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "label": self.label, "type": self.type, "required": self.required,
            "repeated": self.repeated, "min_items": self.min_items, "max_items": self.max_items,
            "choices": [list(c) for c in self.choices], "min": self.min, "max": self.max,
            "max_length": self.max_length, "pattern": self.pattern, "help": self.help, "computed": self.computed,
            "fields": [f.to_json() for f in self.fields],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Field":
        return cls(
            name=data["name"], label=data.get("label", ""), type=data.get("type", "text"),
            required=bool(data.get("required")), repeated=bool(data.get("repeated")),
            min_items=int(data.get("min_items") or 0), max_items=int(data.get("max_items") or 0),
            choices=tuple(tuple(c) for c in data.get("choices", ())), min=data.get("min"), max=data.get("max"),
            max_length=int(data.get("max_length") or 0), pattern=data.get("pattern", ""), help=data.get("help", ""),
            computed=bool(data.get("computed")), fields=tuple(cls.from_json(f) for f in data.get("fields", ())),
        )


@dataclass(frozen=True)
class Slot:
    """An attachment slot (添付書類)."""

    slot: str
    title: str
    required: bool = False
    accepted_types: tuple[str, ...] = IMAGES_AND_PDF
    max_files: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"slot": self.slot, "title": self.title, "required": self.required,
                "accepted_types": list(self.accepted_types), "max_files": self.max_files}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Slot":
        return cls(data["slot"], data.get("title", ""), bool(data.get("required")),
                   tuple(data.get("accepted_types") or IMAGES_AND_PDF), int(data.get("max_files") or 1))


@dataclass(frozen=True)
class Notice:
    """A notice item (お知らせ) of the seed with its start month."""

    title: str
    start_month: str


@dataclass(frozen=True)
class Procedure:
    code: str
    category: str
    title: str
    start_month: str  # "YYYY-MM"
    life_events: tuple[str, ...]
    fields: tuple[Field, ...]
    slots: tuple[Slot, ...] = ()
    notices: tuple[Notice, ...] = ()
    description: str = ""
    keywords: tuple[str, ...] = ()
    municipality_code: str = ""  # "" = national catalogue
    # Name of a rule set in server.application.forms.RULES (cross-field checks, computed fields).
    rules: str = ""

    def __post_init__(self) -> None:
        assert self.category in CATEGORIES, self.category
        assert all(e in LIFE_EVENTS for e in self.life_events), self.life_events

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def slot(self, name: str) -> Slot | None:
        return next((s for s in self.slots if s.slot == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code, "category": self.category, "title": self.title, "start_month": self.start_month,
            "life_events": list(self.life_events), "fields": [f.to_json() for f in self.fields],
            "slots": [s.to_json() for s in self.slots],
            "notices": [[n.title, n.start_month] for n in self.notices], "description": self.description,
            "keywords": list(self.keywords), "municipality_code": self.municipality_code,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Procedure":
        return cls(
            code=data["code"], category=data["category"], title=data["title"], start_month=data["start_month"],
            life_events=tuple(data.get("life_events", ())), fields=tuple(Field.from_json(f) for f in data["fields"]),
            slots=tuple(Slot.from_json(s) for s in data.get("slots", ())),
            notices=tuple(Notice(t, m) for t, m in data.get("notices", ())), description=data.get("description", ""),
            keywords=tuple(data.get("keywords", ())), municipality_code=data.get("municipality_code", ""),
        )
