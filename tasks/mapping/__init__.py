"""V1 records to V2 request bodies: pure functions, no I/O.

One module per object type holds its field table (``projects``, ``committees``,
``members``); ``values`` the contract for single values every table shares;
``merge`` how V1 values are laid over the current V2 record; ``codec`` what KV
values mean; ``record_ids`` what ids may be.

The field table is the one in ``reference/v1-records.md``: for each V2 field the
documented V1 name is read first and the real production column is the fallback.
The rules are the V2 write contract (``reference/v2-contract.md``): a value the V2
service would reject (outside an enum, a bad date, a bad URI) is dropped with a
warning so the rest of the object still syncs; a record without what V2 requires
(sfid, name, slug, the committee's project) raises ``InvalidRecord``.

Decisions worth knowing:

- Booleans are taken only when they are real booleans (V1 booleans are). A string
  such as ``"true"`` is dropped with a warning rather than guessed at: a wrong guess
  could make a private project or committee public.
- Null, absent, empty and ``"nil"`` values are left out of the body, so an update
  keeps the V2 value; clearing a field in V1 therefore does not clear it in V2.
- Enum values are matched exactly, then ignoring case and surrounding or repeated
  whitespace (a warning says so).
- A date-time becomes the calendar date as written, without converting its zone:
  V1 renders date-only columns as midnight timestamps.
"""
