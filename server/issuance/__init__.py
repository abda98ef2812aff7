"""Certificate issuance at kiosks (コンビニ交付).

service.py  the gRPC adapter (KioskSession stream, settings, 利用登録, verification, settlements)
kiosk.py    the kiosk transaction: steps answered once (group-committed, server.groupcommit), refusals,
            documents, money
rules.py    plain rules: settings and defaults, hours, fiscal years, the J-LIS table
pdf.py      certificate PDFs (reportlab, Japanese CID font, QR by segno) and the blob store
store.py    SQL, including the registry records read at issuance
"""
