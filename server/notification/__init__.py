"""Notices (お知らせ) and the self-information view (自己情報表示).

    service.py    the gRPC adapter (NotificationService); publishes NoticeSink, starts scheduler and hub
    sink.py       NoticeSink: other areas deliver one notice to one resident inside their transaction
    templates.py  placeholders ({name}, {child_name}, notice-wide fields): checked, then rendered in SQL
    ages.py       completed ages in months by the Japanese convention (年齢計算ニ関スル法律, 民法143)
    rules.py      age rules (健診, 予防接種), calendar rules (現況届), application rules (妊婦健診)
    scheduler.py  due scheduled notices, chunked fan-out and its resumption, the daily rules run
    hub.py        one poller per process feeding live StreamNotices subscribers (any process's writes)
    store.py      all SQL of the area (fan-out is INSERT ... SELECT, never a loop over recipients)
"""
