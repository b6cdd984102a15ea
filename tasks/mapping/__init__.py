"""V1 records to V2 bodies: pure functions, no I/O (field tables, value codec, id rules)."""
