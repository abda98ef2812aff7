"""Child process for the SIGKILL test: writes households of three residents, one transaction each,
forever, printing the number of each committed household."""

from __future__ import annotations

import sys
from pathlib import Path

import uvloop

from server.db import Database


async def main(path: Path) -> None:
    db = await Database(path, read_connections=1).open()
    async with db.write() as tx:
        await tx.execute("INSERT OR IGNORE INTO municipalities (code, prefecture, name, name_kana) "
                         "VALUES ('131016', '東京都', '千代田区', '')")
    n = 0
    while True:
        n += 1
        async with db.write() as tx:
            household = f"hh{n}"
            await tx.execute("INSERT INTO households (household_id, municipality_code) VALUES (?, '131016')",
                             (household,))
            for member in range(3):
                await tx.execute(
                    "INSERT INTO residents (resident_id, municipality_code, household_id, name, birth_date, sex,"
                    " address, updated_at_ms) VALUES (?, '131016', ?, 'x', '2000-01-01', '1', 'x', 0)",
                    (f"r{n}-{member}", household))
        print(n, flush=True)


if __name__ == "__main__":
    uvloop.run(main(Path(sys.argv[1])))
