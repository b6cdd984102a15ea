"""The V1 to V2 id mappings in the KV bucket ``v1-mappings``.

Keys and values are plain UTF-8 text:

- ``project.sfid.{sfid}`` -> project uid, ``project.slug.{slug}`` -> project uid,
  ``project.uid.{uid}`` -> sfid;
- ``committee.sfid.{sfid}`` -> committee uid, ``committee.uid.{uid}`` -> sfid.

Nothing is cached in the process: another worker may write a mapping at any
moment (a parent created after its child's first attempt), and a KV read
costs well under a millisecond.
"""

from __future__ import annotations

import asyncio

from sync_core.nats_client import SyncNats
from tasks.keylock import check_write_allowed

PROJECT_SFID = "project.sfid."
PROJECT_SLUG = "project.slug."
PROJECT_UID = "project.uid."
COMMITTEE_SFID = "committee.sfid."
COMMITTEE_UID = "committee.uid."


class MappingStore:
    """Read and write the mappings through the process's NATS facade.

    Parameters:
        nats: the blocking NATS client.
        bucket: the mappings bucket (``V1_MAPPINGS_BUCKET``).
    """

    def __init__(self, nats: SyncNats, bucket: str) -> None:
        self._nats = nats
        self.bucket = bucket

    def __repr__(self) -> str:
        return f"MappingStore(bucket={self.bucket!r})"

    def get(self, key: str) -> str | None:
        """The mapping's value, or None when absent, deleted or empty."""
        entry = self._nats.kv_get(self.bucket, key)
        if entry is None or not entry.value:
            return None
        text = bytes(entry.value).decode("utf-8").strip()
        return text or None

    def put(self, key: str, value: str) -> None:
        """Write one mapping (last write wins), only while the run's lease holds."""
        check_write_allowed()
        self._nats.kv_put(self.bucket, key, value.encode("utf-8"))

    def put_many(self, values: dict[str, str]) -> None:
        """Write several mappings in one round trip (concurrently, so in no set order)."""
        check_write_allowed()
        kv = self._nats.kv(self.bucket)

        async def put_all() -> None:
            await asyncio.gather(
                *(kv.put(key, value.encode("utf-8")) for key, value in values.items())
            )

        self._nats.run(put_all())

    def project_uid(self, sfid: str) -> str | None:
        """The V2 uid of the project with V1 ``sfid``."""
        return self.get(PROJECT_SFID + sfid)

    def project_sfid(self, uid: str) -> str | None:
        """The V1 sfid of the V2 project ``uid``."""
        return self.get(PROJECT_UID + uid)

    def project_uid_by_slug(self, slug: str) -> str | None:
        """The V2 uid recorded for ``slug``."""
        return self.get(PROJECT_SLUG + slug)

    def record_project(self, sfid: str, slug: str | None, uid: str) -> None:
        """Write the three project mappings in one round trip."""
        values = {PROJECT_UID + uid: sfid, PROJECT_SFID + sfid: uid}
        if slug:
            values[PROJECT_SLUG + slug] = uid
        self.put_many(values)

    def committee_uid(self, sfid: str) -> str | None:
        """The V2 uid of the committee with V1 ``sfid``."""
        return self.get(COMMITTEE_SFID + sfid)

    def committee_sfid(self, uid: str) -> str | None:
        """The V1 sfid of the V2 committee ``uid``."""
        return self.get(COMMITTEE_UID + uid)

    def record_committee(self, sfid: str, uid: str) -> None:
        """Write both committee mappings in one round trip."""
        self.put_many({COMMITTEE_UID + uid: sfid, COMMITTEE_SFID + sfid: uid})
