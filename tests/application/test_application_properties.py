"""Properties: any JSON a phone may send is either accepted or refused with named fields, never a crash;
the canonical bytes are a pure function of the content."""

from __future__ import annotations

import json
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from server.application.canonical import submission_bytes
from server.application.catalogue import NATIONAL
from server.application.forms import check_form
from server.errors import InvalidArgument

TODAY = date(2026, 12, 3)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=12),
                    st.sampled_from(["2020-05-01", "2026-13-01", "08:30", "ヤマダ", "ﾔﾏﾀﾞ", "yes", "employment"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=20)


def form_like(procedure):
    """Objects with the procedure's own keys (so the checks go deep) filled with arbitrary JSON."""
    names = [f.name for f in procedure.fields]
    return st.dictionaries(st.sampled_from(names), json_values, max_size=len(names))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(NATIONAL).flatmap(lambda p: st.tuples(st.just(p), form_like(p))), st.booleans())
def test_any_json_is_accepted_or_refused_with_form_paths(case, complete):
    procedure, data = case
    try:
        form = check_form(procedure, data, complete=complete, today=TODAY)
    except InvalidArgument as refused:
        assert refused.reason == "FORM_INVALID" and refused.violations
        assert all(v.field.startswith("form.") for v in refused.violations)
    else:
        json.dumps(form)  # what is kept is plain JSON
        assert set(form) <= {f.name for f in procedure.fields}


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=5),
       st.lists(st.tuples(st.sampled_from(["a", "b"]), st.text("0123456789abcdef", min_size=4, max_size=4),
                          st.integers(1, 10**7)), max_size=4),
       st.integers(1, 1000))
def test_canonical_bytes_are_order_independent_and_sensitive_to_every_change(form, files, version):
    attachments = [{"slot": s, "sha256": h, "size": n, "content_type": "image/jpeg"} for s, h, n in files]
    args = dict(application_id="app_1", procedure_code="p", municipality_code="131016", resident_id="res_1",
                version=version, form=form)
    one = submission_bytes(**args, attachments=attachments)
    assert one == submission_bytes(**args, attachments=list(reversed(attachments)))
    assert json.loads(one)["form"] == form
    assert one != submission_bytes(**{**args, "version": version + 1}, attachments=attachments)
    assert one != submission_bytes(**{**args, "form": {**form, "extra-key": 1}}, attachments=attachments)
    assert one != submission_bytes(**args, attachments=attachments + [
        {"slot": "c", "sha256": "ffff", "size": 1, "content_type": "application/pdf"}])
