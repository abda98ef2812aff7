"""Cards for the issuance tests, made once per session (RSA keys are slow) from the shared PKI."""

from __future__ import annotations

import pytest

from clients.pki import DevPki
from server.testing import TEST_START, holder, issue_card

FAMILY = "佐藤鈴木高橋田中伊藤渡辺山本中村小林加藤吉田山田佐々木山口松本井上木村林斎藤清水"


@pytest.fixture(scope="session")
def card_pool(pki_template):
    """20 (CardHolder, SoftwareCard) pairs with distinct names, valid on the template's card CA."""
    pki = DevPki.ensure(pki_template, now=TEST_START)
    pool = []
    for i in range(20):
        person = holder(f"{FAMILY[i]}{FAMILY[(i + 7) % 20]} 第{i:02d}号")
        pool.append((person, issue_card(pki, person, now=TEST_START)))
    return pool


@pytest.fixture(autouse=True)
def inline_pdfs(monkeypatch):
    """In-process test servers render PDFs inline (no worker process to spawn per test);
    test_issuance_pdf_worker.py runs the worker."""
    monkeypatch.setenv("ONESTOP_PDF_WORKERS", "0")
