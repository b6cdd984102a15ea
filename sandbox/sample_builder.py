"""Writes the sample data set of the local stack: ``python -m sandbox.sample_builder``.

The set lives in ``sandbox/sample_data/`` and is committed; this module is how
it was made and how to change it (edit the tables below, run the module, commit
the three files). A test checks that the committed files are exactly what this
module writes, so the expectations cannot drift from the records.

- ``records.jsonl``: one KV put per line, in load order:
  ``{"key", "encoding": "json"|"msgpack"|"raw"|"empty", "value"}``.
- ``users.json``: the V1 users the fake user service knows.
- ``organizations.json``: the V1 organizations the fake organization service knows.
- ``expected.json``: per key, what the sync must end with: ``synced`` (with the
  V2 fields, the parent or project by sfid, and the identity of the last
  write), ``dead_letter`` (with the error kind) or ``skipped`` (with why).

The expected V2 fields follow ``v1-records.md`` and ``v2-contract.md``
(documented field name first, real column as fallback; slug lower-cased;
dates to ``YYYY-MM-DD``; URL clean-up; values outside an enum or format dropped;
committee ``category`` ``Other`` when unknown; ``public`` derived when absent),
independently of the sync task's own mapping code.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sandbox.samples import stays_in_v2
from sandbox.validation import (
    CHAT_CHANNEL_MAX,
    COMMITTEE_CATEGORIES,
    COMMITTEE_DESCRIPTION_MAX,
    COMMITTEE_NAME_MAX,
    FUNDING,
    FUNDING_MODELS,
    JOIN_MODES,
    LEGAL_ENTITY_TYPES,
    MEMBER_APPOINTED_BY,
    MEMBER_NAME_MAX,
    MEMBER_ROLES,
    MEMBER_TITLE_MAX,
    ORGANIZATION_NAME_MAX,
    PROJECT_CATEGORIES,
    PROJECT_STAGES,
    VOTING_STATUSES,
    is_date,
    is_email,
    is_uri,
)

SAMPLE_DIR = Path(__file__).parent / "sample_data"
RECORDS_FILE = "records.jsonl"
USERS_FILE = "users.json"
ORGANIZATIONS_FILE = "organizations.json"
EXPECTED_FILE = "expected.json"

SEED = 20251129
HEIMDALL_CLIENT_ID = "v1_sync_helper"
PROJECT_PREFIX = "salesforce-project__c."
COMMITTEE_PREFIX = "platform-collaboration__c."
MEMBER_PREFIX = "platform-community__c."
SALESFORCE_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")

_rng = random.Random(SEED)


def salesforce_id(prefix: str, rng: random.Random = _rng) -> str:
    """An 18-character Salesforce id: ``prefix`` padded to 15, plus its case-checksum suffix."""
    body = prefix + "".join(rng.choice(ID_ALPHABET) for _ in range(15 - len(prefix)))
    suffix = ""
    for chunk in range(3):
        bits = sum(1 << i for i, ch in enumerate(body[chunk * 5 : chunk * 5 + 5]) if ch.isupper())
        suffix += SALESFORCE_SUFFIX_ALPHABET[bits]
    return body + suffix


def platform_uuid(rng: random.Random = _rng) -> str:
    """A random (seeded) UUID, as V1 platform tables use for ids."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


# -- users and who modified what ------------------------------------------------------

USERS: dict[str, dict[str, str]] = {}
USER_IDS: dict[str, str] = {}


def _user(handle: str, username: str, email: str, first: str, last: str) -> None:
    platform_id = salesforce_id("0032M00002")
    USER_IDS[handle] = platform_id
    USERS[platform_id] = {
        "ID": platform_id,
        "Username": username,
        "Email": email,
        "FirstName": first,
        "LastName": last,
    }


_user("jsmith", "jsmith", "jsmith@linuxfoundation.org", "Jane", "Smith")
_user("cgarcia", "cgarcia", "carlos.garcia@example.com", "Carlos", "Garcia")
_user("mwong", "mwong", "", "Mei", "Wong")  # no e-mail: no email claim
_user("praman", "Priya Raman", "priya@example.org", "Priya", "Raman")  # unsafe: a space
_user("nouser", "", "ghost@example.org", "", "")  # empty username
UNKNOWN_USER_ID = salesforce_id("0031R00002")  # the user service answers 404
MACHINE_SALESFORCE = "salesforce-integration@clients"
MACHINE_PCC = "pcc-sync@clients"

# Who last modified a record, by short handle; "" and None are V1's empty values.
MODIFIERS: dict[str, str | None] = {
    **{handle: USER_IDS[handle] for handle in USER_IDS},
    "unknown": UNKNOWN_USER_ID,
    "sf": MACHINE_SALESFORCE,
    "pcc": MACHINE_PCC,
    "empty": "",
    "null": None,
}


def expected_writer(modified_by: str | None) -> dict[str, Any]:
    """The identity of the V2 write for a ``lastmodifiedbyid`` (issue 5's principal table)."""
    if modified_by and modified_by.endswith("@clients"):
        name = modified_by.removesuffix("@clients")
        return {
            "kind": "machine",
            "principal": modified_by,
            "sub": name,
            "email": None,
            "on_behalf_of": name,
        }
    user = USERS.get(modified_by or "")
    username = (user or {}).get("Username", "")
    if user and username and " " not in username and "@" not in username:
        return {
            "kind": "user",
            "principal": username,
            "sub": username,
            "email": user["Email"] or None,
            "on_behalf_of": username,
        }
    return {
        "kind": "fallback",
        "principal": f"{HEIMDALL_CLIENT_ID}@clients",
        "sub": HEIMDALL_CLIENT_ID,
        "email": None,
        "on_behalf_of": None,
    }


# -- the mapping rules, as the reference documents state them ----------------------------


def clean_url(value: Any) -> str | None:
    """Trim; drop empty and ``nil``; add ``https://`` without a scheme; drop invalid."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.lower() in ("", "nil"):
        return None
    if not SCHEME.match(text):
        text = "https://" + text
    return text if is_uri(text) else None


def date_only(value: Any) -> str | None:
    """The ``YYYY-MM-DD`` of any of V1's date-time shapes, or ``None`` when not a date."""
    if not isinstance(value, str) or not is_date(value[:10]):
        return None
    return value[:10]


# -- projects -------------------------------------------------------------------------


@dataclass
class ProjectSpec:
    """One V1 project of the sample set, before it becomes a record."""

    handle: str
    name: str
    slug: str
    parent: str | None
    description: str | None
    stage: str | None
    entity_type: str | None
    formation: str | None
    logo: str | None
    repository: str | None
    website: str | None
    style: str  # "documented", "real" or "both"
    modified_by: str
    public: bool | None = None  # documented style only
    sfid: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _p(
    handle: str,
    name: str,
    slug: str,
    parent: str | None,
    description: str | None,
    stage: str | None,
    entity_type: str | None,
    formation: str | None,
    urls: tuple[str | None, str | None, str | None],
    style: str,
    modified_by: str,
    public: bool | None = None,
    **extra: Any,
) -> ProjectSpec:
    logo, repository, website = urls
    return ProjectSpec(
        handle,
        name,
        slug,
        parent,
        description,
        stage,
        entity_type,
        formation,
        logo,
        repository,
        website,
        style,
        modified_by,
        public,
        extra=extra,
    )


M = "+00:00"  # Meltano's zone suffix
PROJECTS: list[ProjectSpec] = [
    # Foundations: no parent, so they go under ROOT.
    _p("tlf", "The Linux Foundation", "TLF", None,
       "A non-profit consortium that supports the growth of open source.",
       "Active", "Incorporated Entity", "2000-01-01T00:00:00" + M,
       ("https://www.linuxfoundation.org/hubfs/lf-logo.svg", "github.com/linuxfoundation",
        " www.linuxfoundation.org"), "real", "sf"),
    _p("cncf", "Cloud Native Computing Foundation", "cncf", None,
       "Home of Kubernetes and the cloud native ecosystem.",
       "Active", "Series LLC", "2015-12-11T00:00:00" + M,
       ("https://www.cncf.io/wp-content/uploads/2022/07/cncf-color-bg.svg",
        "https://github.com/cncf", "https://www.cncf.io"), "documented", "jsmith", True),
    _p("openjs", "OpenJS Foundation", "openjs", None,
       "Supports the healthy growth of the JavaScript ecosystem.",
       "Active", "Series LLC", "2019-03-12T00:00:00Z",
       (None, "github.com/openjs-foundation", "openjsf.org"), "real", "cgarcia"),
    _p("lfaidata", "LF AI & Data Foundation", "lfaidata", None,
       "Open source innovation in artificial intelligence and data.",
       "Active", "Series LLC", "2018-03-26T00:00:00",
       ("nil", "https://github.com/lfai", "https://lfaidata.foundation"), "documented", "pcc",
       True),
    _p("openssf", "Open Source Security Foundation", "openssf", None,
       "Securing open source software for the greater public good.",
       "Active", "Series LLC", "2020-08-03T00:00:00" + M,
       ("", "github.com/ossf", "https://openssf.org/"), "real", "mwong"),
    _p("lfenergy", "LF Energy Foundation", "lfenergy", None,
       "Open source for the energy transition.",
       "Formation - Engaged", "Series LLC", "2018-07-01T00:00:00" + M,
       (None, None, "www.lfenergy.org"), "real", "empty"),
    _p("lfdt", "LF Decentralized Trust", "lfdt", None,
       "Open source ledgers, identity and cryptography.",
       "Active", "Series LLC", "2024-09-17T00:00:00Z",
       (None, "https://github.com/lf-decentralized-trust", "https://www.lfdecentralizedtrust.org"),
       "documented", "praman", True),
    # Projects.
    _p("kubernetes", "Kubernetes", "kubernetes", "cncf",
       "Production-grade container orchestration.",
       "Active", "Subproject", "2016-03-10T00:00:00" + M,
       ("https://kubernetes.io/images/favicon.png", "github.com/kubernetes", "kubernetes.io"),
       "real", "sf"),
    _p("prometheus", "Prometheus", "prometheus", "cncf",
       "Monitoring system and time series database.",
       "Active", "Subproject", "2016-05-09T00:00:00" + M,
       (None, "https://github.com/prometheus", "https://prometheus.io"), "documented", "cgarcia",
       True),
    _p("envoy", "Envoy", "envoy", "cncf", "Cloud-native high-performance edge and service proxy.",
       "Active", "Subproject", "2017-09-13T00:00:00Z",
       (None, "github.com/envoyproxy", "www.envoyproxy.io"), "real", "unknown"),
    _p("containerd", "containerd", "containerd", "cncf",
       "An industry-standard container runtime.",
       "Active", "Subproject", "2017-03-29T00:00:00" + M,
       (None, "https://github.com/containerd", "https://containerd.io"), "real", "null"),
    _p("helm", "Helm", "helm", "cncf", "The package manager for Kubernetes.",
       "Graduated", "Subproject", "2018-06-01T00:00:00" + M,  # "Graduated" is no stage
       (None, "github.com/helm", "helm.sh"), "real", "jsmith"),
    _p("opentelemetry", "OpenTelemetry", "opentelemetry", "cncf",
       "High-quality, ubiquitous, and portable telemetry.",
       "Active", "Subproject", "2019-05-07T00:00:00",
       (None, "https://github.com/open-telemetry", "https://opentelemetry.io"), "documented",
       "nouser", False),
    _p("nodejs", "Node.js", "nodejs", "openjs", "A JavaScript runtime built on V8.",
       "Active", "Subproject", "2015-06-08T00:00:00" + M,
       ("https://nodejs.org/static/logos/jsIconGreen.svg", "github.com/nodejs", "nodejs.org"),
       "real", "cgarcia"),
    _p("electron", "Electron", "electron", "openjs",
       "Build cross-platform desktop apps with JavaScript, HTML and CSS.",
       "Active", "Subproject", "2019-12-11T00:00:00Z",
       (None, "https://github.com/electron", "https://www.electronjs.org"), "documented", "sf",
       True),
    _p("webpack", "webpack", "webpack", "openjs", "A bundler for JavaScript and friends.",
       "Active", "Subproject", "2012-02-30T00:00:00" + M,  # no such day: dropped
       (None, "github.com/webpack", "webpack.js.org"), "real", "pcc"),
    _p("jquery", "jQuery", "jquery", "openjs", "The write less, do more JavaScript library.",
       "Archived", "LLC", "2006-08-26T00:00:00" + M,  # "LLC" is no legal entity type
       (None, None, "http://jquery.com"), "real", "mwong"),
    _p("onnx", "ONNX", "onnx", "lfaidata", "Open Neural Network Exchange.",
       "Active", "Subproject", "2019-11-14T00:00:00" + M,
       (None, "https://github.com/onnx", "https://onnx.ai"), "documented", "jsmith", True),
    _p("horovod", "Horovod", "horovod", "lfaidata", None,  # no description: ""
       "Archived", "Subproject", "2018-12-13T00:00:00" + M,
       (None, "github.com/horovod", "horovod.ai"), "real", "empty"),
    _p("milvus", "Milvus", "milvus", "lfaidata", "A cloud-native vector database.",
       "Active", "Subproject", "2020-01-21T00:00:00Z",
       (None, "https://github.com/milvus-io", "https://milvus.io"), "documented", "cgarcia",
       True),
    _p("sigstore", "Sigstore", "sigstore", "openssf",
       "A new standard for signing, verifying and protecting software.",
       "Active", "Subproject", "2021-03-09T00:00:00" + M,
       (None, "github.com/sigstore", "www.sigstore.dev"), "real", "sf"),
    _p("scorecard", "OpenSSF Scorecard", "scorecard", "openssf",
       "Security health metrics for open source.",
       "Active", "Subproject", "2020-11-06T00:00:00" + M,
       (None, "github.com/ossf/scorecard", "securityscorecards.dev (see docs)"),  # invalid
       "real", "mwong"),
    _p("slsa", "SLSA", "slsa", "openssf", "Supply-chain Levels for Software Artifacts.",
       "Formation - Exploratory", "Unofficial Subproject", "2021-06-16T00:00:00",
       (None, "https://github.com/slsa-framework", "https://slsa.dev"), "documented", "pcc",
       False),
    _p("seapath", "SEAPATH", "seapath", "lfenergy",
       "Software Enabled Automation Platform and Artifacts (THerein).",
       "Active", "Subproject", "2021-01-27T00:00:00" + M,
       (None, "github.com/seapath", "lfenergy.org/projects/seapath"), "real", "cgarcia"),
    _p("openeemeter", "OpenEEmeter", "openeemeter", "lfenergy",
       "Standard methods for calculating normalized metered energy consumption.",
       "Prospect", "Subproject", "2019-05-01T00:00:00Z",
       (None, None, "https://lfenergy.org/projects/openeemeter"), "documented", "jsmith", False),
    _p("fabric", "Hyperledger Fabric", "hyperledger-fabric", "lfdt",
       "A permissioned distributed ledger framework.",
       "Active", "Subproject", "2016-03-01T00:00:00" + M,
       (None, "github.com/hyperledger/fabric", "www.hyperledger.org/projects/fabric"),
       "real", "unknown"),
    _p("besu", "Hyperledger Besu", "hyperledger-besu", "lfdt",
       "An enterprise-grade Ethereum client.",
       "Active", "Subproject", "2019-08-29T00:00:00" + M,
       (None, "https://github.com/hyperledger/besu", "https://besu.hyperledger.org"),
       "documented", "sf", True),
    _p("zephyr", "Zephyr Project", "zephyr", "tlf",
       "A scalable real-time operating system for connected devices.",
       "Active", "Subproject", "2016-02-17T00:00:00" + M,
       (None, "github.com/zephyrproject-rtos", "www.zephyrproject.org"), "real", "pcc"),
    _p("spdx", "SPDX", "spdx", "tlf", "The open standard for software bills of materials.",
       "Active", "Subproject", "2010-08-01T00:00:00Z",
       (None, "https://github.com/spdx", "https://spdx.dev"), "both", "jsmith",
       extra={"project_status__c": "Formation - Engaged", "website__c": "spdx.org"}),
    # Subprojects.
    _p("minikube", "minikube", "minikube", "kubernetes", "Local Kubernetes, focused on learning.",
       "Active", "Unofficial Subproject", "2016-04-18T00:00:00" + M,
       (None, "github.com/kubernetes/minikube", "minikube.sigs.k8s.io"), "real", "cgarcia"),
    _p("kustomize", "Kustomize", "kustomize", "kubernetes",
       "Customization of Kubernetes YAML configurations.",
       "Active", "Unofficial Subproject", "2018-05-01T00:00:00",
       (None, "https://github.com/kubernetes-sigs/kustomize", "https://kustomize.io"),
       "documented", "sf", True),
    _p("kind", "kind", "kind", "kubernetes", "Kubernetes IN Docker.",
       "Active", "Unofficial Subproject", "2018-09-19T00:00:00" + M,
       (None, "github.com/kubernetes-sigs/kind", "kind.sigs.k8s.io"), "real", "empty"),
    _p("alertmanager", "Alertmanager", "alertmanager", "prometheus",
       "Handles alerts sent by client applications such as Prometheus.",
       "Active", "Unofficial Subproject", "2015-06-30T00:00:00Z",
       (None, "github.com/prometheus/alertmanager", None), "real", "mwong"),
    _p("cosign", "Cosign", "cosign", "sigstore", "Container signing, verification and storage.",
       "Active", "Unofficial Subproject", "2021-03-09T00:00:00" + M,
       (None, "https://github.com/sigstore/cosign", "https://docs.sigstore.dev/cosign"),
       "documented", "jsmith", True),
    _p("rekor", "Rekor", "rekor", "sigstore", "A software supply chain transparency log.",
       "Active", "Unofficial Subproject", "2021-03-09T00:00:00" + M,
       (None, "github.com/sigstore/rekor", None), "real", "sf"),
    _p("fulcio", "Fulcio", "fulcio", "sigstore", "A free code signing certificate authority.",
       "Formation - On Hold", "Unofficial Subproject", "2021-03-09T00:00:00" + M,
       (None, "github.com/sigstore/fulcio", None), "real", "pcc"),
    _p("undici", "undici", "undici", "nodejs", "An HTTP/1.1 client, written from scratch.",
       "Active", "Unofficial Subproject", "2020-05-01T00:00:00",
       (None, "https://github.com/nodejs/undici", "https://undici.nodejs.org"), "documented",
       "cgarcia", True),
    _p("nodegyp", "node-gyp", "node-gyp", "nodejs", "Node.js native addon build tool.",
       "Active", "Unofficial Subproject", "2012-01-01T00:00:00" + M,
       (None, "github.com/nodejs/node-gyp", None), "real", "null"),
    _p("fabricca", "Fabric CA", "fabric-ca", "fabric", "Certificate Authority for Fabric.",
       "Active", "Unofficial Subproject", "2017-01-01T00:00:00Z",
       (None, "github.com/hyperledger/fabric-ca", None), "real", "unknown"),
    _p("onnxmlir", "ONNX-MLIR", "onnx-mlir", "onnx",
       "Compiles ONNX models with MLIR.",
       "Formation - Engaged", "Unofficial Subproject", "2019-12-01T00:00:00" + M,
       (None, "https://github.com/onnx/onnx-mlir", None), "documented", "jsmith", False),
    _p("mcuboot", "MCUboot", "mcuboot", "zephyr", "Secure boot for 32-bit microcontrollers.",
       "Active", "Unofficial Subproject", "2017-01-10T00:00:00" + M,
       (None, "github.com/mcu-tools/mcuboot", "www.trustedfirmware.org/projects/mcuboot"),
       "real", "praman"),
]  # fmt: skip

# Children written to KV before their parents (the sync must converge anyway).
EARLY_PROJECTS = ("minikube", "cosign", "undici", "kubernetes", "fabricca", "sigstore", "mcuboot")

for _spec in PROJECTS:
    _spec.sfid = salesforce_id("a0941000002")
PROJECT_BY_HANDLE = {spec.handle: spec for spec in PROJECTS}

# The opportunity owner's ``salesforce_b2b-User`` record (put into v1-objects, not synced).
OWNER_ID = "0054100000OwnerAAZ"
OWNER_KEY = "salesforce_b2b-User." + OWNER_ID
OWNER_RECORD = {
    "Id": OWNER_ID,
    "FirstName": "Olga",
    "LastName": "Owner",
    "Email": "olga.owner@linuxfoundation.org",
    "FullPhotoUrl": "https://photos.example.org/olga.png",
    "IsActive": True,
}

# The columns of the second release ("More columns the V2 objects need"), by project.
NEW_PROJECT_COLUMNS: dict[str, dict[str, Any]] = {
    "tlf": {
        "admin_category__c": "Adopted",
        "funding__c": "Funded",
        "model__c": "Membership; Alternate Funding",
        "project_entity_formation_document__c": "www.linuxfoundation.org/formation.pdf",
        "mission_statement": "Decentralized innovation through open collaboration.",
        "expected_announcement_date__c": "2000-01-01T00:00:00" + M,
        "executive_director__c": USER_IDS["jsmith"],
        "program_manager__c": USER_IDS["cgarcia"],
        "opportunity_owner__c": OWNER_ID,
    },
    "cncf": {
        "admin_category__c": "Foundation",  # not a V2 category: NONE
        "funding__c": "Supported by Parent Project",
        "model__c": "Membership;Grants",  # Grants is no V2 funding model: dropped
        "parent_entity_relationship__c": "tlf",  # the legal parent, by handle
        "mission_statement": "Make cloud native computing ubiquitous.",
        "executive_director__c": USER_IDS["cgarcia"],
        "program_manager__c": USER_IDS["mwong"],  # no e-mail: left as V2 has it
    },
    "kubernetes": {
        "admin_category__c": "Graduated",
        "parent_entity_relationship__c": "cncf",  # written before cncf: waits for it
        "expected_announcement_date__c": "2014-06-06T18:01:25",
    },
    "horovod": {
        "admin_category__c": "Emeritus",
        "project_entity_dissolution_date__c": "2023-06-30T00:00:00" + M,  # Archived needs it
    },
    "prometheus": {"funding__c": "Unfunded", "model__c": "Crowdfunding"},
}
for _handle, _columns in NEW_PROJECT_COLUMNS.items():
    _legal = _columns.get("parent_entity_relationship__c")
    if _legal is not None:
        _columns["parent_entity_relationship__c"] = PROJECT_BY_HANDLE[_legal].sfid
    PROJECT_BY_HANDLE[_handle].extra.update(_columns)

DOCUMENTED_FIELDS = {
    "description": "description__c",
    "formation": "formation_date__c",
    "legal_name": "legal_entity_name__c",
    "entity_type": "legal_entity_type__c",
    "logo": "logo_url__c",
    "repository": "repository_url__c",
    "stage": "stage__c",
    "website": "website_url__c",
}
REAL_FIELDS = {
    "description": "description__c",
    "formation": "start_date__c",
    "legal_name": "project_entity_name__c",
    "entity_type": "category__c",
    "logo": "project_logo__c",
    "repository": "repositoryurl__c",
    "stage": "project_status__c",
    "website": "website__c",
}


def _timestamps(index: int) -> dict[str, str]:
    """Loader metadata in V1's three date-time shapes, varied by record."""
    day = 1 + index % 27
    shapes = (
        f"2025-11-{day:02d}T21:04:05+00:00",
        f"2025-11-{day:02d}T18:01:25",
        f"2025-11-{day:02d}T09:30:00Z",
    )
    return {
        "lastmodifieddate": shapes[index % 3],
        "createddate": f"2019-04-{1 + index % 28:02d}T10:00:00+00:00",
        "systemmodstamp": shapes[index % 3],
        "_sdc_extracted_at": f"2025-11-{day:02d}T21:05:00+00:00",
        "_sdc_received_at": f"2025-11-{day:02d}T21:05:01+00:00",
    }


def project_record(spec: ProjectSpec, index: int) -> dict[str, Any]:
    """The V1 record of a project, in its naming style."""
    columns = REAL_FIELDS if spec.style == "real" else DOCUMENTED_FIELDS
    parent_sfid = PROJECT_BY_HANDLE[spec.parent].sfid if spec.parent else None
    record: dict[str, Any] = {
        "sfid": spec.sfid,
        "name": spec.name,
        "slug__c": spec.slug,
        columns["description"]: spec.description,
        columns["stage"]: spec.stage,
        columns["entity_type"]: spec.entity_type,
        columns["legal_name"]: spec.name if spec.entity_type != "Subproject" else None,
        columns["formation"]: spec.formation,
        columns["logo"]: spec.logo,
        columns["repository"]: spec.repository,
        columns["website"]: spec.website,
        "parent_project__c": parent_sfid,
        "isdeleted": False,
        "lastmodifiedbyid": MODIFIERS[spec.modified_by],
        **_timestamps(index),
    }
    if spec.style == "real":
        record.update(
            {"admin_category__c": None, "charterurl__c": "nil", "auto_join_enabled__c": False}
        )
    else:
        record["public__c"] = spec.public
    record.update(spec.extra)
    return record


def expected_project_fields(
    spec: ProjectSpec, record: dict[str, Any], public_by_handle: dict[str, bool]
) -> tuple[dict[str, Any], list[str]]:
    """The V2 fields the project must end with, and the V2 fields dropped as invalid."""

    def pick(documented: str, real: str) -> Any:
        value = record.get(documented)
        return value if value is not None else record.get(real)

    fields: dict[str, Any] = {
        "name": record["name"],
        "slug": record["slug__c"].lower(),
        "description": record.get("description__c") or "",
    }
    dropped: list[str] = []
    legal_name = pick("legal_entity_name__c", "project_entity_name__c")
    if legal_name is not None:
        fields["legal_entity_name"] = legal_name
    checks = {
        "stage": (pick("stage__c", "project_status__c"), lambda v: v in PROJECT_STAGES),
        "legal_entity_type": (
            pick("legal_entity_type__c", "category__c"),
            lambda v: v in LEGAL_ENTITY_TYPES,
        ),
    }
    for v2_field, (value, valid) in checks.items():
        if value is None:
            continue
        if valid(value):
            fields[v2_field] = value
        else:
            dropped.append(v2_field)
    formation = pick("formation_date__c", "start_date__c")
    if formation is not None:
        if date_only(formation) is not None:
            fields["formation_date"] = date_only(formation)
        else:
            dropped.append("formation_date")
    for v2_field, (documented, real) in {
        "logo_url": ("logo_url__c", "project_logo__c"),
        "repository_url": ("repository_url__c", "repositoryurl__c"),
        "website_url": ("website_url__c", "website__c"),
    }.items():
        raw = pick(documented, real)
        url = clean_url(raw)
        if url is not None:
            fields[v2_field] = url
        elif isinstance(raw, str) and raw.strip().lower() not in ("", "nil"):
            dropped.append(v2_field)
    _expected_new_project_fields(record, fields, dropped)
    public = record.get("public__c")
    if public is None:
        parent_public = public_by_handle[spec.parent] if spec.parent else True
        public = fields.get("stage") == "Active" and parent_public
    fields["public"] = public
    public_by_handle[spec.handle] = public
    return fields, dropped


def _expected_new_project_fields(
    record: dict[str, Any], fields: dict[str, Any], dropped: list[str]
) -> None:
    """The V2 fields of the second release's project columns (and the Archived rule)."""
    category = record.get("admin_category__c")
    if isinstance(category, str) and category.strip():
        fields["category"] = category if category in PROJECT_CATEGORIES else "NONE"
    funding = record.get("funding__c")
    if funding is not None:
        if funding in FUNDING:
            fields["funding"] = funding
        else:
            dropped.append("funding")
    model = record.get("model__c")
    if isinstance(model, str):
        parts = [part.strip() for part in model.split(";") if part.strip()]
        kept = [part for part in parts if part in FUNDING_MODELS]
        if kept:
            fields["funding_model"] = kept
    dissolution = date_only(record.get("project_entity_dissolution_date__c"))
    if dissolution is not None:
        fields["entity_dissolution_date"] = dissolution
    document = clean_url(record.get("project_entity_formation_document__c"))
    if document is not None:
        fields["entity_formation_document_url"] = document
    if fields.get("stage") == "Archived" and dissolution is None:
        del fields["stage"]
        dropped.append("stage")


def expected_project_settings(record: dict[str, Any]) -> dict[str, Any] | None:
    """The settings the project must end with (users by e-mail), or None without columns."""
    columns = (
        "mission_statement",
        "expected_announcement_date__c",
        "executive_director__c",
        "program_manager__c",
        "opportunity_owner__c",
    )
    if all(record.get(column) is None for column in columns):
        return None
    settings: dict[str, Any] = {}
    if record.get("mission_statement"):
        settings["mission_statement"] = record["mission_statement"]
    announcement = date_only(record.get("expected_announcement_date__c"))
    if announcement is not None:
        settings["announcement_date"] = announcement
    for v2_field in ("executive_director", "program_manager"):
        user = USERS.get(record.get(f"{v2_field}__c") or "", {})
        if user.get("Email"):
            settings[v2_field] = {"email": user["Email"]}
    if record.get("opportunity_owner__c") == OWNER_ID:
        settings["opportunity_owner"] = {"email": OWNER_RECORD["Email"]}
    return settings


# -- committees -------------------------------------------------------------------------


@dataclass
class CommitteeSpec:
    """One V1 committee of the sample set."""

    project: str
    name: str
    v1_type: str
    description: str | None
    website: str | None
    voting: bool
    public: bool
    sso: bool
    public_name: str | None
    modified_by: str
    sfid: str = ""


FOUNDATION_COMMITTEES = [
    ("Governing Board", "Board", "lists.{domain}/g/governing-board", True, False, True),
    (
        "Technical Oversight Committee",
        "Technical Oversight Committee/Technical Advisory Committee",
        "github.com/{slug}/toc",
        True,
        True,
        True,
    ),
    ("Marketing Committee", "Marketing Committee/Sub Committee", None, False, True, False),
    ("Legal Committee", "Legal Committee", "nil", False, False, True),
    ("Finance Committee", "Finance Committee", None, True, False, False),
    (
        "Code of Conduct Committee",
        "Code of Conduct",
        "https://{domain}/conduct/",
        False,
        True,
        False,
    ),
    (  # the combined V1 value, split by the name: "Advisory" makes it the TAC
        "Technical Advisory Council",
        "Technical Oversight Committee/Technical Advisory Committee",
        None,
        True,
        True,
        True,
    ),
]
PROJECT_COMMITTEES = [
    ("Technical Steering Committee", "Technical Steering Committee", "github.com/{slug}/community"),
    ("Maintainers", "Maintainers", None),
    ("Security Response Committee", "Product Security", "https://{domain}/security"),
    ("Outreach", "Outreach Committee", None),  # not a V2 category: Other
    ("Committers", "Committers", None),
]
FOUNDATION_DOMAINS = {
    "tlf": "linuxfoundation.org",
    "cncf": "cncf.io",
    "openjs": "openjsf.org",
    "lfaidata": "lfaidata.foundation",
    "openssf": "openssf.org",
    "lfenergy": "lfenergy.org",
    "lfdt": "lfdecentralizedtrust.org",
}
# Who last modified committees, in rotation: mostly people and machines, some fallbacks.
COMMITTEE_MODIFIERS = [
    "jsmith", "sf", "cgarcia", "pcc", "mwong", "sf", "jsmith", "cgarcia", "pcc",
    "empty", "sf", "unknown", "mwong", "null", "jsmith", "praman", "cgarcia", "nouser",
]  # fmt: skip
LONG_NAME = (
    "Kubernetes Special Interest Group for Contributor Experience, Documentation, "
    "Release Engineering and Testing Infrastructure"
)
LONG_DESCRIPTION = (
    "The Technical Oversight Committee of the LF AI & Data Foundation provides technical "
    "leadership to the foundation's projects: it approves new projects, defines the "
    "project lifecycle, and coordinates cross-project initiatives. "
) * 12


def _committee_specs() -> list[CommitteeSpec]:
    specs: list[CommitteeSpec] = []
    handles = COMMITTEE_MODIFIERS
    for index, spec in enumerate(PROJECTS):
        domain = FOUNDATION_DOMAINS.get(spec.handle, spec.slug.lower() + ".io")
        if spec.parent is None:
            chosen = FOUNDATION_COMMITTEES[: 4 + index % 4]
            for offset, (name, v1_type, website, voting, public, sso) in enumerate(chosen):
                description = f"{name} of {spec.name}."
                if spec.handle == "lfaidata" and v1_type.startswith("Technical Oversight"):
                    description = LONG_DESCRIPTION
                specs.append(
                    CommitteeSpec(
                        spec.handle,
                        name,
                        v1_type,
                        description,
                        website.format(domain=domain, slug=spec.slug.lower()) if website else None,
                        voting,
                        public,
                        sso,
                        f"{spec.name} {name}" if public else None,
                        handles[(index + offset) % len(handles)],
                    )
                )
        elif PROJECT_BY_HANDLE[spec.parent].parent is None:
            chosen_project = PROJECT_COMMITTEES[: 1 + index % 3]
            if spec.handle in ("kubernetes", "nodejs"):
                chosen_project = PROJECT_COMMITTEES
            for offset, (name, v1_type, website) in enumerate(chosen_project):
                specs.append(
                    CommitteeSpec(
                        spec.handle,
                        name,
                        v1_type,
                        f"{name} of {spec.name}." if offset % 4 != 3 else None,
                        website.format(domain=domain, slug=spec.slug) if website else None,
                        offset == 0,
                        offset != 1,
                        offset == 0,
                        f"{spec.name} {name}" if offset != 1 else None,
                        handles[(index * 3 + offset) % len(handles)],
                    )
                )
        elif index % 2 == 0:
            specs.append(
                CommitteeSpec(
                    spec.handle,
                    "Maintainers",
                    "Maintainers",
                    f"Maintainers of {spec.name}.",
                    None,
                    False,
                    True,
                    False,
                    f"{spec.name} Maintainers",
                    handles[index % len(handles)],
                )
            )
    specs.append(
        CommitteeSpec(
            "kubernetes",
            LONG_NAME,
            "Special Interest Group",
            "A SIG whose V1 name is longer than V2 allows.",
            "github.com/kubernetes/community/tree/master/sig-contributor-experience",
            False,
            True,
            False,
            LONG_NAME,
            "cgarcia",
        )
    )
    for committee in specs:
        committee.sfid = platform_uuid()
    return specs


COMMITTEES = _committee_specs()


# The committee columns of the second release, in rotation over the committees
# (an empty entry: the record does not carry them).
NEW_COMMITTEE_COLUMNS: tuple[dict[str, Any], ...] = (
    {},
    {
        "mailing_list_email": "{list}@lists.example.org",
        "chat_channel": "#{list}",
        "join_mode": "application",
        "business_email_required__c": True,
    },
    {"join_mode": "Open Door", "chat_channel": "", "mailing_list_email": "nil"},  # dropped
    {"join_mode": "open", "business_email_required__c": False},
    {},
)


def committee_record(spec: CommitteeSpec, index: int) -> dict[str, Any]:
    """The V1 record of a committee (one naming style: they coincide)."""
    timestamps = _timestamps(index)
    columns = NEW_COMMITTEE_COLUMNS[index % len(NEW_COMMITTEE_COLUMNS)]
    short = re.sub(r"[^a-z0-9]+", "-", f"{spec.project}-{spec.name}".lower()).strip("-")
    extra = {
        column: value.format(list=short) if isinstance(value, str) else value
        for column, value in columns.items()
    }
    return {
        **extra,
        "sfid": spec.sfid,
        "mailing_list__c": spec.name,
        "project_name__c": PROJECT_BY_HANDLE[spec.project].sfid,
        "description__c": spec.description,
        "type__c": spec.v1_type,
        "committee_website__c": spec.website,
        "enable_voting__c": spec.voting,
        "sso_group_enabled": spec.sso,
        "sso_group_name": f"{spec.project}-{spec.name}".lower().replace(" ", "-")
        if spec.sso
        else None,
        "public_enabled": spec.public,
        "public_name": spec.public_name,
        "lastmodifiedbyid": MODIFIERS[spec.modified_by],
        "lastmodifieddate": timestamps["lastmodifieddate"],
        "createddate": timestamps["createddate"],
        "_sdc_extracted_at": timestamps["_sdc_extracted_at"],
        "_sdc_received_at": timestamps["_sdc_received_at"],
    }


def expected_committee_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The V2 fields the committee must end with."""
    v1_type = record["type__c"]
    category = v1_type if v1_type in COMMITTEE_CATEGORIES else "Other"
    if v1_type == "Technical Oversight Committee/Technical Advisory Committee":
        words = set(re.findall(r"[a-z0-9]+", record["mailing_list__c"].lower()))
        advisory = words & {"tac", "advisory"}
        category = f"Technical {'Advisory' if advisory else 'Oversight'} Committee"
    fields: dict[str, Any] = {
        "name": record["mailing_list__c"][:COMMITTEE_NAME_MAX],
        "category": category,
        "enable_voting": record["enable_voting__c"],
        "public": record["public_enabled"],
        "sso_group_enabled": record["sso_group_enabled"],
    }
    if record["description__c"] is not None:
        fields["description"] = record["description__c"][:COMMITTEE_DESCRIPTION_MAX]
    if record["public_name"] is not None:
        fields["display_name"] = record["public_name"][:COMMITTEE_NAME_MAX]
    website = clean_url(record["committee_website__c"])
    if website is not None:
        fields["website"] = website
    if is_email(record.get("mailing_list_email")):
        fields["mailing_list"] = record["mailing_list_email"]
    if record.get("chat_channel"):
        fields["chat_channel"] = record["chat_channel"][:CHAT_CHANNEL_MAX]
    if record.get("join_mode") in JOIN_MODES:
        fields["join_mode"] = record["join_mode"]
    return fields


def expected_committee_settings(record: dict[str, Any]) -> dict[str, Any] | None:
    """The committee settings V1 owns, or None when the record carries none."""
    value = record.get("business_email_required__c")
    return None if value is None else {"business_email_required": value}


def needs_organization(committee: dict[str, Any]) -> bool:
    """Whether the committee service requires a member's organization there."""
    return (
        committee["enable_voting__c"] is True or committee.get("business_email_required__c") is True
    )


# -- committee members ------------------------------------------------------------------

ORGANIZATIONS: dict[str, dict[str, Any]] = {}
# The company most members work for: a thousand members of one company must cost
# one organization lookup, and here a hundred do.
BIG_ORG = "acme"
ORG_HANDLES = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell")
MEMBER_SEED = SEED + 2
MEMBERS_PER_COMMITTEE = (2, 3, 4)
PEOPLE = 120
PEOPLE_WITH_V1_USERS = 40
UNKNOWN_ORG_SHARE = 0.05
UNKNOWN_MEMBER_ROLES = ("Board Chair", "Maintainer", "Observer Seat")
UNKNOWN_VOTING = ("Voter", "Non-voting")
UNKNOWN_APPOINTED = ("The Board", "Self-nominated")
MEMBER_DATE_SHAPES = ("{d}T00:00:00+00:00", "{d}T18:01:25", "{d}T09:30:00Z")


@dataclass
class Person:
    """Someone who sits on sample committees (several, for some)."""

    contact_id: str
    email: str
    title: str | None
    org: str | None  # an ORGANIZATIONS sfid, an unknown sfid, or None


def _member_people(rng: random.Random) -> list[Person]:
    """The people of the member set; the first ones have V1 users (names to look up)."""
    for handle in ORG_HANDLES:
        sfid = salesforce_id("0014100000", rng)
        ORGANIZATIONS[sfid] = {
            "ID": sfid,
            "Name": f"{handle.capitalize()} Corporation",
            "Domains": [f"{handle}.example.com"],
        }
    org_ids = list(ORGANIZATIONS)
    titles = ("CTO", "Principal Engineer", "VP Engineering", "Maintainer", None, "x" * 230)
    people = []
    for number in range(PEOPLE):
        contact_id = salesforce_id("0031000001", rng)
        first, last = f"Member{number}", rng.choice(("Ng", "Okafor", "Silva", "Berg", "Kim"))
        if number < PEOPLE_WITH_V1_USERS:
            USERS[contact_id] = {
                "ID": contact_id,
                "Username": f"member{number}",
                "Email": f"member{number}@example.org",
                "FirstName": first,
                "LastName": last if number % 7 else "L" * 120,  # too long for V2: truncated
            }
        roll = rng.random()
        if roll < 0.45:
            org: str | None = org_ids[0]  # the big organization
        elif roll < 0.45 + UNKNOWN_ORG_SHARE:
            org = salesforce_id("0014100000", rng)  # the organization service answers 404
        elif roll < 0.9:
            org = rng.choice(org_ids[1:])
        else:
            org = None
        domain = "acme.example.com" if org == org_ids[0] else "example.net"
        email = f"{first.lower()}.{last.lower()}@{domain}"
        if number % 11 == 0:
            email = f"  {email.upper()} "  # V1 has odd spacing and case
        people.append(Person(contact_id, email, titles[number % len(titles)], org))
    return people


def _member_date(rng: random.Random, index: int) -> str | None:
    if index % 5 == 4:
        return None
    day = f"20{18 + index % 7}-{1 + index % 12:02d}-{1 + index % 28:02d}"
    if index % 17 == 3:
        day = f"2023-02-{29 + index % 2}"  # no such day: dropped
    return MEMBER_DATE_SHAPES[index % 3].format(d=day)


def _member_record(
    sfid: str, committee: CommitteeSpec, person: Person, index: int, rng: random.Random
) -> dict[str, Any]:
    """The V1 ``platform-community__c`` record of one member."""
    roles = (*MEMBER_ROLES, *UNKNOWN_MEMBER_ROLES, None)
    voting = (*VOTING_STATUSES, *UNKNOWN_VOTING, None)
    appointed = (*MEMBER_APPOINTED_BY, *UNKNOWN_APPOINTED, None)
    timestamps = _timestamps(index)
    return {
        "sfid": sfid,
        "contact_name__c": person.contact_id,
        "contactemail__c": person.email,
        "collaboration_name__c": committee.sfid,
        "project_name__c": PROJECT_BY_HANDLE[committee.project].sfid,
        "account__c": person.org,
        "title": person.title,
        "role__c": roles[index % len(roles)],
        "start_date__c": _member_date(rng, index),
        "end_date__c": _member_date(rng, index + 2) if index % 4 == 0 else None,
        "appointed_by__c": appointed[index % len(appointed)],
        "status__c": ("Active", "Inactive", None)[index % 3],
        "voting_status__c": voting[index % len(voting)],
        "voting_start_date__c": _member_date(rng, index + 1) if index % 3 == 0 else None,
        "voting_end_date__c": None,
        "lastmodifiedbyid": MODIFIERS[list(MODIFIERS)[index % len(MODIFIERS)]],
        "lastmodifieddate": timestamps["lastmodifieddate"],
        "_sdc_extracted_at": timestamps["_sdc_extracted_at"],
        "_sdc_received_at": timestamps["_sdc_received_at"],
    }


def _member_enum(value: Any, allowed: tuple[str, ...]) -> str | None:
    """The reference's rule: a V2 value as is, anything else ``None`` (null stays absent)."""
    if value is None:
        return None
    return value if value in allowed else "None"


def committee_needs_organization(committee: CommitteeSpec) -> bool:
    """Whether members of the sample committee need an organization (voting, business e-mail)."""
    columns = NEW_COMMITTEE_COLUMNS[COMMITTEES.index(committee) % len(NEW_COMMITTEE_COLUMNS)]
    return committee.voting or columns.get("business_email_required__c") is True


def expected_member_fields(
    record: dict[str, Any], voting_committee: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """The V2 fields the member must end with, and the optional fields it must not have.

    On a ``voting_committee`` a voting status of ``None`` (or one outside the enum)
    leaves ``voting`` out: the committee service refuses it.
    """
    fields: dict[str, Any] = {
        "email": record["contactemail__c"].strip(),
        "status": record["status__c"] or "Active",
    }
    dropped = []
    user = USERS.get(record["contact_name__c"], {})
    for v2_field, column in (
        ("username", "Username"),
        ("first_name", "FirstName"),
        ("last_name", "LastName"),
    ):
        if user.get(column):
            fields[v2_field] = user[column][:MEMBER_NAME_MAX]
        else:
            dropped.append(v2_field)
    if record["title"] is not None:
        fields["job_title"] = record["title"][:MEMBER_TITLE_MAX]
    else:
        dropped.append("job_title")
    appointed = _member_enum(record["appointed_by__c"], MEMBER_APPOINTED_BY)
    if appointed is not None:
        fields["appointed_by"] = appointed
    else:
        dropped.append("appointed_by")
    for v2_field, name_field, name_column, enum, dates in (
        ("role", "name", "role__c", MEMBER_ROLES, ("start_date__c", "end_date__c")),
        (
            "voting",
            "status",
            "voting_status__c",
            VOTING_STATUSES,
            ("voting_start_date__c", "voting_end_date__c"),
        ),
    ):
        nested: dict[str, Any] = {}
        name = _member_enum(record[name_column], enum)
        if v2_field == "voting" and voting_committee and name == "None":
            dropped.append(v2_field)
            continue
        if name is not None:
            nested[name_field] = name
        for part, column in zip(("start_date", "end_date"), dates, strict=True):
            day = date_only(record[column])
            if day is not None:
                nested[part] = day
        if nested:
            fields[v2_field] = nested
        else:
            dropped.append(v2_field)
    account = record["account__c"]
    if account is None:
        dropped.append("organization")
    else:
        organization = {"id": account}
        if account in ORGANIZATIONS:
            organization["name"] = ORGANIZATIONS[account]["Name"][:ORGANIZATION_NAME_MAX]
        fields["organization"] = organization
    return fields, dropped


def _malformed_members(rng: random.Random, people: list[Person]) -> list[tuple[str, Any, str]]:
    """(key, record, dead-letter kind) of members that must not sync."""
    committee = COMMITTEES[1]
    letters = []
    for index, email in enumerate(("", None, "   ", "jane.doe(at)example.com")):
        sfid = platform_uuid(rng)
        value = _member_record(sfid, committee, people[index], index, rng)
        value["contactemail__c"] = email
        letters.append((MEMBER_PREFIX + sfid, value, "invalid_record"))
    unknown_committee = CommitteeSpec(
        committee.project, "Gone", "Other", None, None, False, False, False, None, "sf"
    )
    unknown_committee.sfid = platform_uuid(rng)  # never loaded into v1-objects
    for index in range(2):
        sfid = platform_uuid(rng)
        value = _member_record(sfid, unknown_committee, people[10 + index], index, rng)
        letters.append((MEMBER_PREFIX + sfid, value, "missing_committee"))
    # No organization on a voting committee: the committee service refuses the member.
    voting_committee = COMMITTEES[0]
    assert voting_committee.voting
    sfid = platform_uuid(rng)
    value = _member_record(sfid, voting_committee, people[20], 1, rng)
    value["account__c"] = None
    letters.append((MEMBER_PREFIX + sfid, value, "member_needs_organization"))
    return letters


def _add_members(sample: SampleSet) -> None:
    """A few hundred members over the sample committees, after every committee is put.

    People sit on several committees; a hundred-odd work for one organization;
    unknown enum values, bad dates and odd email spacing occur; blank and
    invalid emails and an unknown committee end in the dead letters.
    """
    rng = random.Random(MEMBER_SEED)
    people = _member_people(rng)
    index = 0
    for committee in COMMITTEES:
        count = MEMBERS_PER_COMMITTEE[index % len(MEMBERS_PER_COMMITTEE)]
        for person in rng.sample(people, count):
            sfid = platform_uuid(rng)
            value = _member_record(sfid, committee, person, index, rng)
            needs_organization = committee_needs_organization(committee)
            if needs_organization and value["account__c"] is None:
                # V2 refuses such a member there; one deliberate case is in the dead letters.
                value["account__c"] = next(iter(ORGANIZATIONS))
            key = MEMBER_PREFIX + sfid
            sample.put(key, _encoding(index), value)
            fields, dropped = expected_member_fields(value, committee.voting)
            sample.expected[key] = {
                "outcome": "synced",
                "type": "committee_member",
                "sfid": sfid,
                "committee_sfid": committee.sfid,
                "fields": fields,
                "dropped": dropped,
                "writer": expected_writer(value["lastmodifiedbyid"]),
            }
            index += 1
    for key, value, reason in _malformed_members(rng, people):
        if reason == "missing_committee":
            # First in the load: they wait SYNC_PARENT_WAIT for a committee that
            # never comes, and the deletes wait for them to settle; starting that
            # wait at once keeps make run short.
            sample.put_first(key, _encoding(index), value)
        else:
            sample.put(key, _encoding(index), value)
        sample.expected[key] = {"outcome": "dead_letter", "reason": reason}
        index += 1


# -- deletes (phases 2 and 3) --------------------------------------------------------------
#
# The loader writes phase N+1 once every key of the phases before has settled:
# a delete must find its object synced, a re-put must find the delete done.

LOAD_PHASE = 1
DELETE_PHASE = 2
REPUT_PHASE = 3
HARD_DELETES = ("DEL", "PURGE")
SDC_DELETED = "_sdc_deleted_at"
ISDELETED = "isdeleted"
# When the loader saw the soft deletes; a deleting user's own edit is 0.4 s before it.
DELETED_AT = "2025-11-30T12:00:00Z"
DELETED_BY_USER_AT = "2025-11-30T11:59:59.600000+00:00"  # within 1 s: the user deletes
EDITED_EARLIER_AT = "2025-11-30T09:45:00Z"  # hours before: the service deletes
DELETER_WINDOW_SECONDS = 1.0


@dataclass(frozen=True)
class DeleteSpec:
    """One V1 delete: ``shape`` is ``DEL``, ``PURGE``, ``_sdc_deleted_at`` or ``isdeleted``.

    ``user``: the handle in ``lastmodifiedbyid`` of a soft delete (None: keep
    the record's); ``by_user``: whether ``lastmodifieddate`` is within 1 s of
    ``_sdc_deleted_at`` (so that user deletes).
    """

    target: str
    shape: str
    user: str | None = None
    by_user: bool = False


# Crowdfunded projects are the only ones the project service deletes; V1 does
# not send a funding model, so the sandbox is told these slugs.
CROWDFUNDED_PROJECTS = ("minikube", "kind", "cosign", "fulcio")
PROJECT_DELETES = (
    DeleteSpec("minikube", "DEL"),
    DeleteSpec("kind", "PURGE"),
    DeleteSpec("cosign", SDC_DELETED, user="jsmith", by_user=True),
    DeleteSpec("fulcio", "DEL"),  # then re-put in phase 3: ends skipped:tombstoned
    DeleteSpec("nodegyp", "DEL"),  # not crowdfunded: refused
    DeleteSpec("onnxmlir", ISDELETED, user="cgarcia"),  # not crowdfunded: refused
)
REPUT_PROJECTS = ("fulcio",)
# Committees by their index in COMMITTEES (their members go with them).
COMMITTEE_DELETES = (
    DeleteSpec("20", "DEL"),
    DeleteSpec("40", SDC_DELETED, user="jsmith", by_user=False),
    DeleteSpec("60", ISDELETED, user="mwong"),
)
# Members by their position among the synced members (none of a deleted committee).
MEMBER_DELETES = (
    DeleteSpec("5", "DEL"),  # then re-put in phase 3: ends skipped:tombstoned
    DeleteSpec("50", SDC_DELETED, user="cgarcia", by_user=True),
    DeleteSpec("150", "PURGE"),
)
REPUT_MEMBERS = ("5",)


def expected_deleter(record: dict[str, Any] | None) -> dict[str, Any]:
    """Who V2 sees deleting: the V1 user only within 1 s of ``_sdc_deleted_at``.

    Written from ``deletes-and-members.md`` (not the task's code): a hard delete
    (no record), ``isdeleted`` and an older edit are the service itself.
    """
    if record is None or not record.get(SDC_DELETED):
        return expected_writer(None)
    deleted = datetime.fromisoformat(record[SDC_DELETED])
    modified = datetime.fromisoformat(str(record.get("lastmodifieddate")))
    if abs((deleted - modified).total_seconds()) > DELETER_WINDOW_SECONDS:
        return expected_writer(None)
    return expected_writer(record.get("lastmodifiedbyid"))


def soft_deleted(record: dict[str, Any], spec: DeleteSpec) -> dict[str, Any]:
    """``record`` as the loader writes it once V1 marked it deleted (``spec.shape``)."""
    deleted = dict(record)
    if spec.user is not None:
        deleted["lastmodifiedbyid"] = USER_IDS[spec.user]
    if spec.shape == SDC_DELETED:
        deleted[SDC_DELETED] = DELETED_AT
        deleted["lastmodifieddate"] = DELETED_BY_USER_AT if spec.by_user else EDITED_EARLIER_AT
    else:
        deleted[ISDELETED] = True
        deleted["lastmodifieddate"] = DELETED_AT
    return deleted


def _write_delete(sample: SampleSet, key: str, spec: DeleteSpec, index: int) -> dict[str, Any]:
    """Write the delete of ``key`` in the delete phase; the ``delete`` expectation."""
    if spec.shape in HARD_DELETES:
        sample.hard_delete(key, spec.shape, DELETE_PHASE)
        record = None
    else:
        record = soft_deleted(sample.last_value(key), spec)
        sample.put(key, _encoding(index), record, DELETE_PHASE)
    return {"shape": spec.shape, "phase": DELETE_PHASE, "deleter": expected_deleter(record)}


def _add_project_deletes(sample: SampleSet) -> None:
    """Hard and soft deletes of synced leaf projects: crowdfunded ones go, the others stay."""
    for index, spec in enumerate(PROJECT_DELETES):
        key = PROJECT_PREFIX + PROJECT_BY_HANDLE[spec.target].sfid
        expectation = sample.expected[key]
        expectation["delete"] = _write_delete(sample, key, spec, index)
        if spec.target in CROWDFUNDED_PROJECTS:
            expectation.update(outcome="deleted", crowdfunded=True)
            expectation["delete"]["accepted"] = True
        else:
            # V2 refuses: a dead letter of its own kind; the project and its mappings stay.
            expectation.update(outcome="dead_letter", reason="delete_refused")
            expectation["delete"]["accepted"] = False


def _add_committee_deletes(sample: SampleSet) -> None:
    """Hard and soft deletes of synced committees; V2 removes their members with them."""
    for index, spec in enumerate(COMMITTEE_DELETES):
        committee = COMMITTEES[int(spec.target)]
        key = COMMITTEE_PREFIX + committee.sfid
        expectation = sample.expected[key]
        expectation["delete"] = {**_write_delete(sample, key, spec, index), "accepted": True}
        expectation["outcome"] = "deleted"
        for member in sample.expected.values():
            if member.get("committee_sfid") == committee.sfid and member["outcome"] == "synced":
                member["removed_with_committee"] = key


def _synced_member_keys(sample: SampleSet) -> list[str]:
    return [
        key
        for key, value in sample.expected.items()
        if value.get("type") == "committee_member"
        and value["outcome"] == "synced"
        and "removed_with_committee" not in value
    ]


def _add_member_deletes(sample: SampleSet) -> None:
    """Hard and soft deletes of synced committee members."""
    members = _synced_member_keys(sample)
    for index, spec in enumerate(MEMBER_DELETES):
        key = members[int(spec.target)]
        expectation = sample.expected[key]
        expectation["delete"] = {**_write_delete(sample, key, spec, index), "accepted": True}
        expectation["outcome"] = "deleted"


def _add_never_synced_deletes(sample: SampleSet, rng: random.Random) -> None:
    """Deletes of records V2 never had: ``skipped`` ``not_in_v2``."""
    never_put = PROJECT_PREFIX + salesforce_id("a0941000002", rng)
    sample.hard_delete(never_put, "DEL", DELETE_PHASE)
    sample.expected[never_put] = {"outcome": "skipped", "reason": "not_in_v2"}
    # A member V1 created and deleted before the loader first saw it.
    committee = COMMITTEES[3]
    person = Person(salesforce_id("0031000003", rng), "late.leaver@example.net", "Engineer", None)
    sfid = platform_uuid(rng)
    record = soft_deleted(
        _member_record(sfid, committee, person, 7, rng),
        DeleteSpec("", SDC_DELETED, user="praman", by_user=True),
    )
    sample.put(MEMBER_PREFIX + sfid, "msgpack", record, DELETE_PHASE)
    sample.expected[MEMBER_PREFIX + sfid] = {"outcome": "skipped", "reason": "not_in_v2"}


def _add_reputs(sample: SampleSet) -> None:
    """Old rows re-emitted after their delete: the tombstone keeps them deleted."""
    members = [
        key
        for key, value in sample.expected.items()
        if value.get("type") == "committee_member" and "delete" in value
    ]
    keys = [PROJECT_PREFIX + PROJECT_BY_HANDLE[handle].sfid for handle in REPUT_PROJECTS]
    keys += [
        members[position]
        for position, spec in enumerate(MEMBER_DELETES)
        if spec.target in REPUT_MEMBERS
    ]
    for key in keys:
        first_put = next(line for line in sample.lines if line["key"] == key)
        sample.put(key, first_put["encoding"], first_put["value"], REPUT_PHASE)
        sample.expected[key].update(outcome="skipped", reason="tombstoned")
        sample.expected[key]["reput_phase"] = REPUT_PHASE


def _add_deletes(sample: SampleSet) -> None:
    """Every delete of the set, after everything else (phases 2 and 3)."""
    _add_project_deletes(sample)
    _add_committee_deletes(sample)
    _add_member_deletes(sample)
    _add_never_synced_deletes(sample, random.Random(SEED + 3))
    _add_reputs(sample)


# -- assembling the set -------------------------------------------------------------------


@dataclass
class SampleSet:
    """Everything the three files hold."""

    lines: list[dict[str, Any]] = field(default_factory=list)
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)

    def put(self, key: str, encoding: str, value: Any, phase: int = LOAD_PHASE) -> None:
        """One KV put, in load order (``phase`` is written only when it is not the first)."""
        line: dict[str, Any] = {"key": key, "encoding": encoding, "value": value}
        if phase != LOAD_PHASE:
            line = {"phase": phase, **line}
        self.lines.append(line)

    def put_first(self, key: str, encoding: str, value: Any) -> None:
        """One KV put of the first phase, ahead of every other write."""
        self.lines.insert(0, {"key": key, "encoding": encoding, "value": value})

    def hard_delete(self, key: str, operation: str, phase: int) -> None:
        """One KV ``DEL`` or ``PURGE`` of ``key``, in load order."""
        self.lines.append({"phase": phase, "key": key, "operation": operation})

    def last_value(self, key: str) -> Any:
        """A copy of the value of the last put of ``key``."""
        value = next(line["value"] for line in reversed(self.lines) if line["key"] == key)
        return dict(value)


def _encoding(index: int) -> str:
    # About a third of the values are msgpack, as in production.
    return "msgpack" if index % 3 == 1 else "json"


def _add_projects(sample: SampleSet) -> list[tuple[str, str, Any]]:
    public_by_handle: dict[str, bool] = {}
    puts: list[tuple[str, str, Any]] = []
    for index, spec in enumerate(PROJECTS):
        record = project_record(spec, index)
        fields, dropped = expected_project_fields(spec, record, public_by_handle)
        key = PROJECT_PREFIX + spec.sfid
        puts.append((spec.handle, key, record))
        sample.expected[key] = {
            "outcome": "synced",
            "type": "project",
            "sfid": spec.sfid,
            "parent_sfid": PROJECT_BY_HANDLE[spec.parent].sfid if spec.parent else None,
            "fields": fields,
            "dropped": dropped,
            "writer": expected_writer(record["lastmodifiedbyid"]),
            "naming": spec.style,
        }
        settings = expected_project_settings(record)
        if settings is not None:
            sample.expected[key]["settings"] = settings
    return puts


def _malformed_projects(rng: random.Random) -> list[tuple[str, str, str, Any, str]]:
    """(what, key, encoding, value, dead-letter kind) of projects that must not sync."""
    bad_json_sfid = salesforce_id("a0941000002", rng)
    missing_sfid_key = salesforce_id("a0941000002", rng)
    orphan_sfid = salesforce_id("a0941000002", rng)
    unknown_parent = salesforce_id("a0941000002", rng)
    return [
        (
            "bad_json",
            PROJECT_PREFIX + bad_json_sfid,
            "raw",
            '{"sfid": "' + bad_json_sfid + '", "name": "Open Mainframe Project", '
            '"slug__c": "openmainframe", "description__c": "Mainframe',
            "undecodable",
        ),
        (
            "missing_sfid",
            PROJECT_PREFIX + missing_sfid_key,
            "json",
            {
                "name": "LF Networking",
                "slug__c": "lfn",
                "description__c": "Open source networking projects.",
                "project_status__c": "Active",
                "parent_project__c": None,
                "isdeleted": False,
                "lastmodifiedbyid": MACHINE_SALESFORCE,
                **_timestamps(3),
            },
            "invalid_record",
        ),
        (
            "unknown_parent",
            PROJECT_PREFIX + orphan_sfid,
            "msgpack",
            {
                "sfid": orphan_sfid,
                "name": "Orphaned Working Group",
                "slug__c": "orphaned-wg",
                "description__c": "Its parent was never loaded into V1 objects.",
                "project_status__c": "Active",
                "category__c": "Subproject",
                "parent_project__c": unknown_parent,
                "isdeleted": False,
                "lastmodifiedbyid": USER_IDS["jsmith"],
                **_timestamps(5),
            },
            "missing_parent",
        ),
    ]


def _malformed_committees(rng: random.Random) -> list[tuple[str, str, str, Any, str]]:
    """(what, key, encoding, value, dead-letter kind) of committees that must not sync."""
    bad_sfid = platform_uuid(rng)
    orphan_sfid = platform_uuid(rng)
    return [
        (
            "bad_committee_json",
            COMMITTEE_PREFIX + bad_sfid,
            "raw",
            "{'sfid': '" + bad_sfid + "', 'mailing_list__c': 'Ambassadors'}",  # Python repr
            "undecodable",
        ),
        (
            "unknown_project",
            COMMITTEE_PREFIX + orphan_sfid,
            "json",
            {
                "sfid": orphan_sfid,
                "mailing_list__c": "Steering Committee",
                "project_name__c": salesforce_id("a0941000002", rng),
                "description__c": "Belongs to a project V1 objects does not hold.",
                "type__c": "Technical Steering Committee",
                "committee_website__c": None,
                "enable_voting__c": True,
                "sso_group_enabled": False,
                "sso_group_name": None,
                "public_enabled": False,
                "public_name": None,
                "lastmodifiedbyid": MACHINE_PCC,
                **_timestamps(9),
            },
            "missing_project",
        ),
    ]


def _skipped(rng: random.Random) -> list[tuple[str, str, Any, str]]:
    """(key, encoding, value, reason) of puts the sync skips."""
    account_id = salesforce_id("0014100000", rng)
    contact_id = salesforce_id("0031000001", rng)
    return [
        (
            "salesforce-account." + account_id,
            "json",
            {"sfid": account_id, "name": "Example Corp", "website": "example.com"},
            "other_prefix",
        ),
        (
            "salesforce-contact." + contact_id,
            "msgpack",
            {"sfid": contact_id, "email": "jane@example.com", "accountid": account_id},
            "other_prefix",
        ),
        (
            "dynamodb-project-settings." + platform_uuid(rng),
            "json",
            {"writers": ["jsmith"], "auditors": []},
            "other_prefix",
        ),
        (PROJECT_PREFIX + salesforce_id("a0941000002", rng), "empty", None, "empty_value"),
        # Not synced, but read: the opportunity owner of a project's settings.
        (OWNER_KEY, "msgpack", OWNER_RECORD, "other_prefix"),
    ]


def build() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """The records (load order), the users and the expectations."""
    sample = SampleSet()
    project_puts = _add_projects(sample)
    committee_puts = []
    for index, spec in enumerate(COMMITTEES):
        record = committee_record(spec, index)
        key = COMMITTEE_PREFIX + spec.sfid
        committee_puts.append((key, record))
        sample.expected[key] = {
            "outcome": "synced",
            "type": "committee",
            "sfid": spec.sfid,
            "project_sfid": record["project_name__c"],
            "fields": expected_committee_fields(record),
            "dropped": [],
            "writer": expected_writer(record["lastmodifiedbyid"]),
        }
        committee_settings = expected_committee_settings(record)
        if committee_settings is not None:
            sample.expected[key]["settings"] = committee_settings

    ordered = [p for p in project_puts if p[0] in EARLY_PROJECTS]
    ordered.sort(key=lambda p: EARLY_PROJECTS.index(p[0]))
    ordered += [p for p in project_puts if p[0] not in EARLY_PROJECTS]
    # A few committees arrive before any project; the rest are spread over the load.
    early_committees, later_committees = committee_puts[:6], committee_puts[6:]
    counter = 0
    for key, record in early_committees:
        sample.put(key, _encoding(counter), record)
        counter += 1
    # Ids made here come from their own generator: building twice gives the same set.
    rng = random.Random(SEED + 1)
    malformed = _malformed_projects(rng) + _malformed_committees(rng)
    skipped = _skipped(rng)
    for position, (_handle, key, record) in enumerate(ordered):
        sample.put(key, _encoding(counter), record)
        counter += 1
        for key2, record2 in later_committees[position * 2 : position * 2 + 2]:
            sample.put(key2, _encoding(counter), record2)
            counter += 1
        if position < len(malformed):
            _kind, bad_key, encoding, value, reason = malformed[position]
            sample.put(bad_key, encoding, value)
            sample.expected[bad_key] = {"outcome": "dead_letter", "reason": reason}
        if position < len(skipped):
            skip_key, encoding, value, reason = skipped[position]
            sample.put(skip_key, encoding, value)
            sample.expected[skip_key] = {"outcome": "skipped", "reason": reason}
    for key, record in later_committees[len(ordered) * 2 :]:
        sample.put(key, _encoding(counter), record)
        counter += 1

    # A second revision of one project: the latest state must win.
    kubernetes = PROJECT_BY_HANDLE["kubernetes"]
    key = PROJECT_PREFIX + kubernetes.sfid
    latest = dict(next(line["value"] for line in sample.lines if line["key"] == key))
    latest["description__c"] = "Production-Grade Container Scheduling and Management."
    latest["lastmodifiedbyid"] = USER_IDS["jsmith"]
    latest["lastmodifieddate"] = "2025-11-28T08:15:00Z"
    sample.put(key, "msgpack", latest)
    sample.expected[key]["fields"]["description"] = latest["description__c"]
    sample.expected[key]["writer"] = expected_writer(latest["lastmodifiedbyid"])
    sample.expected[key]["revisions"] = 2

    _add_members(sample)
    _add_deletes(sample)

    projects = [k for k, v in sample.expected.items() if v.get("type") == "project"]
    committees = [k for k, v in sample.expected.items() if v.get("type") == "committee"]
    members = [k for k, v in sample.expected.items() if v.get("type") == "committee_member"]
    outcomes = [v["outcome"] for v in sample.expected.values()]
    reasons = Counter(v.get("reason") for v in sample.expected.values())
    in_v2 = Counter(v["type"] for v in sample.expected.values() if stays_in_v2(v))
    deleted = [v for v in sample.expected.values() if v.get("delete", {}).get("accepted")]
    expected = {
        "about": (
            "Per KV key of records.jsonl, the outcome of syncing the latest value. "
            "'writer' assumes HEIMDALL_CLIENT_ID=v1_sync_helper for the fallback identity; "
            "'parent_sfid' null means the ROOT project; 'dropped' lists V2 fields whose "
            "V1 value was invalid and must be absent."
        ),
        "heimdall_client_id": HEIMDALL_CLIENT_ID,
        "counts": {
            "puts": len(sample.lines),
            "keys": len(sample.expected),
            "projects": len(projects),
            "committees": len(committees),
            "members": len(members),
            "dead_letters": outcomes.count("dead_letter"),
            "skipped": outcomes.count("skipped"),
            # What V2 holds at the end: the deleted objects (and the members of
            # deleted committees) are gone.
            "projects_in_v2": in_v2["project"],
            "committees_in_v2": in_v2["committee"],
            "members_in_v2": in_v2["committee_member"],
            "phases": max(line.get("phase", LOAD_PHASE) for line in sample.lines),
            # The delete outcomes of the run (make run's summary counts them).
            "deleted": len(deleted),
            "delete_refused": reasons["delete_refused"],
            "skipped:tombstoned": reasons["tombstoned"],
            "skipped:not_in_v2": reasons["not_in_v2"],
        },
        "crowdfunding_slugs": sorted(
            PROJECT_BY_HANDLE[handle].slug.lower() for handle in CROWDFUNDED_PROJECTS
        ),
        "keys": sample.expected,
    }
    return sample.lines, dict(USERS), expected


def render() -> dict[str, str]:
    """File name -> exact file content."""
    lines, users, expected = build()
    return {
        RECORDS_FILE: "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines),
        USERS_FILE: json.dumps(users, indent=2, ensure_ascii=False) + "\n",
        ORGANIZATIONS_FILE: json.dumps(ORGANIZATIONS, indent=2, ensure_ascii=False) + "\n",
        EXPECTED_FILE: json.dumps(expected, indent=2, ensure_ascii=False) + "\n",
    }


def main() -> None:
    """Write the three files into ``sandbox/sample_data/``."""
    SAMPLE_DIR.mkdir(parents=True, exist_ok=True)
    for name, content in render().items():
        (SAMPLE_DIR / name).write_text(content, encoding="utf-8")
        print(f"wrote {SAMPLE_DIR / name}")


if __name__ == "__main__":
    main()
