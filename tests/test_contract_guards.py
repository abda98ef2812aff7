"""Guards over the whole service table: every RPC has an authorisation rule, documents its callers
and errors, paginates if it lists, and takes a request_id if it changes anything."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from server import app, authz

PROTOS = Path(__file__).resolve().parent.parent / "protos"
# Reads and RPCs whose retry is harmless by nature (a fresh challenge; a stream that resumes).
READ_PREFIXES = ("Get", "Download", "List", "Search", "Stream", "WhoAmI", "Verify", "Lookup", "Check", "Prepare", "Read")
NOT_REPLAYABLE = {"CreateChallenge", "KioskSession"}
app.area_modules()  # importing each area's service registers its authorisation rules


def services():
    """Every service the contract declares: each .proto under protos/, through its generated module
    (not the servicers' imports, which name their modules as they like)."""
    found = []
    for path in sorted(PROTOS.rglob("*.proto")):
        module = importlib.import_module(".".join(path.relative_to(PROTOS).with_suffix("").parts) + "_pb2")
        found += module.DESCRIPTOR.services_by_name.values()
    return found


def methods():
    return [(s, m) for s in services() for m in s.methods]


def test_there_are_services():
    names = {s.full_name for s in services()}
    areas = {path.parent.parent.name for path in PROTOS.rglob("*.proto")}
    assert {f"onestop.{area}.v1.{area.capitalize()}Service" for area in areas} <= names
    assert "onestop.application.v1.ApplicationService" in names


@pytest.mark.parametrize("service,method", methods(), ids=lambda x: getattr(x, "full_name", str(x)))
def test_every_rpc_has_an_authorisation_rule(service, method):
    assert authz.rule_for(f"/{service.full_name}/{method.name}") is not None


def _proto_comments() -> dict[str, str]:
    comments = {}
    for path in PROTOS.rglob("*.proto"):
        text = path.read_text("utf-8")
        package = re.search(r"^package\s+([\w.]+);", text, re.M).group(1)
        for service_match in re.finditer(r"service\s+(\w+)\s*\{(.*?)\n\}", text, re.S):
            block = service_match.group(2)
            comment: list[str] = []
            for line in block.splitlines():
                stripped = line.strip()
                if stripped.startswith("//"):
                    comment.append(stripped[2:].strip())
                    continue
                rpc = re.match(r"rpc\s+(\w+)\s*\(", stripped)
                if rpc:
                    comments[f"{package}.{service_match.group(1)}/{rpc.group(1)}"] = " ".join(comment)
                if stripped:
                    comment = []
    return comments


@pytest.mark.parametrize("service,method", methods(), ids=lambda x: getattr(x, "full_name", str(x)))
def test_every_rpc_documents_callers_and_errors(service, method):
    comment = _proto_comments().get(f"{service.full_name}/{method.name}", "")
    assert "Callers:" in comment, f"{method.full_name}: say who may call it ('Callers: ...')"
    assert "Errors:" in comment, f"{method.full_name}: list its error cases ('Errors: ...')"


@pytest.mark.parametrize("service,method", methods(), ids=lambda x: getattr(x, "full_name", str(x)))
def test_list_rpcs_are_paginated(service, method):
    if not method.name.startswith(("List", "Search")):
        return
    request, response = method.input_type.fields_by_name, method.output_type.fields_by_name
    assert "page_size" in request and "page_token" in request, method.full_name
    assert "next_page_token" in response, method.full_name


@pytest.mark.parametrize("service,method", methods(), ids=lambda x: getattr(x, "full_name", str(x)))
def test_mutating_rpcs_take_a_request_id(service, method):
    if method.name.startswith(READ_PREFIXES) or method.name in NOT_REPLAYABLE:
        return
    if method.client_streaming:
        return  # streams carry ids per message where they change things
    assert "request_id" in method.input_type.fields_by_name, f"{method.full_name} changes state: add request_id"
