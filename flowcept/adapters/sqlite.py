"""Watch an SQLite database that another process writes.

New rows of the chosen table (and changed rows, with ``updated_column``)
become one record each: activity ``sqlite:<table>``, the row as
``generated``, its rowid and the table in ``custom_metadata``.

Never in the writer's way: the connection is read-only
(``file:...?mode=ro``), ``PRAGMA data_version`` tells a pass whether any
other connection committed since the previous one (nothing is read when
not), and each pass reads in bounded chunks, each in its own short read
transaction.  In WAL mode readers never block the writer; in the default
rollback-journal mode a read holds a SHARED lock only for one chunk, so a
writer with a busy timeout waits at most that long.  SQLite has no
cross-process change hook, so polling is the only non-intrusive way.

TEXT values that are not UTF-8 are recorded with each undecodable byte as
``\\xNN``.

Position: ``rowid`` of the last emitted row (new rows), or, with
``updated_column``, the pair (last updated value, last rowid), so a row
updated again is emitted again with the new value (its source id includes
the updated value, so each version has its own record id).
"""
from __future__ import annotations

import os
import re
import time
from typing import Iterator, Optional

from flowcept.adapters.base import Adapter, Item
from flowcept.errors import ConfigError

from flowcept.config import Option

# settings keys <adapter>_<name> (file, FLOWCEPT_* environment, Flowcept(...) keywords)
OPTIONS = (
    Option("path", str, "", "the database file to watch"),
    Option("table", str, "", "the table whose new rows become records"),
    Option("updated_column", str, "", "a column that grows when a row changes (re-emits changed rows)"),
    Option("poll_interval", float, 1.0, "seconds between passes", range=(0, 86400)),
    Option("checkpoint", str, "", "checkpoint file (\"\" = <run_dir>/adapters/sqlite-<hash>.json)"),
)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SqliteAdapter(Adapter):
    name = "sqlite"

    def __init__(self, session=None, *, path: str, table: str, updated_column: Optional[str] = None,
                 chunk_rows: int = 1000, **kw):
        super().__init__(session, **kw)
        for what, v in (("table", table), ("updated_column", updated_column)):
            if v is not None and not _IDENT.match(v):
                raise ConfigError(f"sqlite adapter: {what} {v!r} is not a plain SQL identifier "
                                  "(letters, digits, underscore)")
        if chunk_rows < 1:
            raise ConfigError("sqlite adapter: chunk_rows must be >= 1")
        self.path = os.path.abspath(path)
        self.table = table
        self.updated_column = updated_column
        self.chunk_rows = int(chunk_rows)
        self._conn = None
        self._data_version = None

    def source_key(self) -> str:
        return f"sqlite:{self.path}:{self.table}:{self.updated_column or ''}"

    def open(self) -> None:
        import sqlite3
        if not os.path.exists(self.path):
            raise ConfigError(f"sqlite adapter: no database at {self.path}; start the writer first "
                              "or fix the path")
        self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=1.0,
                                     isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        # a TEXT value that is not UTF-8 must not stop the adapter: its bytes as \xNN
        self._conn.text_factory = lambda b: b.decode("utf-8", "backslashreplace")
        self._data_version = None
        self._seen_version = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def read_new(self) -> Iterator[Item]:
        if self._conn is None:
            return
        v = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if v == self._data_version:   # no other connection committed since the last full pass
            return
        self._seen_version = v
        last = int(self.position.get("rowid", 0))
        upd = self.position.get("updated")
        has_upd = "updated" in self.position
        while True:
            rows = self._chunk(last, upd, has_upd)
            now = time.time_ns()
            for row in rows:
                d = dict(row)
                rowid = d.pop("__rowid")
                src = f"{self.table}:{rowid}"
                meta = {"table": self.table, "rowid": rowid, "database": self.path}
                advance = [["set", ["rowid"], rowid]]
                if self.updated_column:
                    upd, has_upd = d.get(self.updated_column), True
                    src = f"{src}@{upd}"
                    advance.append(["set", ["updated"], upd])
                last = rowid
                yield Item(source_id=src, activity=f"sqlite:{self.table}", start_ns=now,
                           end_ns=now, generated=d, custom_metadata=meta, advance=advance)
            if len(rows) < self.chunk_rows:
                return

    def pass_done(self) -> None:
        self._data_version = self._seen_version   # everything committed before it is emitted

    def _chunk(self, last: int, upd, has_upd: bool):
        if self.updated_column:
            u = self.updated_column
            if has_upd:
                sql = (f"SELECT rowid AS __rowid, * FROM {self.table} WHERE ({u} > ?) OR "
                       f"({u} = ? AND rowid > ?) ORDER BY {u}, rowid LIMIT ?")
                args = (upd, upd, last, self.chunk_rows)
            else:
                sql = (f"SELECT rowid AS __rowid, * FROM {self.table} WHERE {u} IS NOT NULL "
                       f"ORDER BY {u}, rowid LIMIT ?")
                args = (self.chunk_rows,)
        else:
            sql = f"SELECT rowid AS __rowid, * FROM {self.table} WHERE rowid > ? ORDER BY rowid LIMIT ?"
            args = (last, self.chunk_rows)
        # one short read transaction per chunk: fetchall ends it before we emit
        return self._conn.execute(sql, args).fetchall()
