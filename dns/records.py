"""The cluster's DNS records, derived from Services, EndpointSlices and Pods (plain Kubernetes dicts),
following the Kubernetes DNS-Based Service Discovery specification the way CoreDNS's kubernetes plugin
answers it, and kept rendered as wire-format templates for `answer.resolve`.

Each object contributes a set of records; a change replaces that object's contribution and re-renders
only the names it touched (and names whose answers refer to them: CNAME chains, SRV glue).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from dnslib import AAAA, CNAME, NS, PTR, RR, SOA, SRV, TXT, A
from podnet.dns.answer import CLASS_IN, Rcode, RType, Template, name_to_wire, negative, render, soa_record

from podnet.api.keys import namespace_and_name

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SCHEMA_VERSION = "1.1.0"
MAX_CNAME_CHAIN = 8
# Address answers are served in up to this many rotations (each rendered ahead, like every answer).
MAX_ROTATIONS = 8
# Replies remembered by the question bytes after the ID; forgotten all at once on any change, or when full.
MAX_REMEMBERED = 65536


@dataclass(frozen=True, slots=True, order=True)
class Record:
    """One resource record without TTL. `value` is (address,) for A/AAAA, (target,) for
    CNAME/PTR/NS, (text,) for TXT, (port, target) for SRV and () for the zone's SOA."""

    name: str
    rtype: RType
    value: tuple


def _dashed(ip: str) -> str:
    return ip.replace(".", "-").replace(":", "-")


def _address_record(name: str, ip: str) -> Record | None:
    try:
        version = ipaddress.ip_address(ip).version
    except ValueError:
        return None
    return Record(name, RType.A if version == 4 else RType.AAAA, (ip,))


def _reverse(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer


def _ready_endpoints(slices: Iterable[dict]) -> list[tuple[str, str | None, list[dict]]]:
    """(address, hostname, the slice's ports) for each ready endpoint address; `ready` left unset counts
    as ready, as the EndpointSlice API says consumers should read it."""
    found = []
    for endpoint_slice in slices:
        if endpoint_slice.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
            continue
        ports = endpoint_slice.get("ports") or []
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                found.append((address, endpoint.get("hostname"), ports))
    return found


def service_records(service: dict, slices: Iterable[dict], zone: str) -> tuple[set[Record], set[str]]:
    """The records of one Service and its endpoints, and the names that exist because of it (the
    service name exists even when a headless service has no ready endpoint)."""
    meta = service.get("metadata") or {}
    spec = service.get("spec") or {}
    fqdn = f"{meta.get('name')}.{meta.get('namespace', 'default')}.svc.{zone}"
    records: set[Record] = set()
    if spec.get("type") == "ExternalName":
        if spec.get("externalName"):
            records.add(Record(fqdn, RType.CNAME, (spec["externalName"].rstrip(".").lower(),)))
        return records, {fqdn}
    headless = spec.get("clusterIP") == "None"
    if not headless:
        cluster_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        for ip in cluster_ips:
            if (record := _address_record(fqdn, ip)) is not None:
                records.add(record)
                records.add(Record(_reverse(ip), RType.PTR, (fqdn,)))
        for port in spec.get("ports") or []:
            if port.get("name") and port.get("port"):
                srv = f"_{port['name']}._{port.get('protocol', 'TCP').lower()}.{fqdn}"
                records.add(Record(srv, RType.SRV, (int(port["port"]), fqdn)))
    for ip, hostname, ports in _ready_endpoints(slices):
        endpoint_fqdn = f"{hostname or _dashed(ip)}.{fqdn}"
        if (record := _address_record(endpoint_fqdn, ip)) is None:
            continue
        records.add(record)
        records.add(Record(_reverse(ip), RType.PTR, (endpoint_fqdn,)))
        if headless:
            records.add(Record(fqdn, record.rtype, (ip,)))
            for port in ports:
                if port.get("name") and port.get("port"):
                    srv = f"_{port['name']}._{port.get('protocol', 'TCP').lower()}.{fqdn}"
                    records.add(Record(srv, RType.SRV, (int(port["port"]), endpoint_fqdn)))
    return records, {fqdn}


def pod_records(pod: dict, zone: str) -> set[Record]:
    """`a-b-c-d.<ns>.pod.<zone>` for each IP of a pod that holds its IPs (not Succeeded or Failed)."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return set()
    ips = [entry.get("ip") for entry in status.get("podIPs") or []] or [status.get("podIP")]
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    return {
        record
        for ip in ips
        if ip and (record := _address_record(f"{_dashed(ip)}.{namespace}.pod.{zone}", ip)) is not None
    }


def zone_records(zone: str) -> set[Record]:
    return {
        Record(zone, RType.SOA, ()),
        Record(zone, RType.NS, (f"ns.dns.{zone}",)),
        Record(f"dns-version.{zone}", RType.TXT, (SCHEMA_VERSION,)),
    }


def _valid_name(name: str) -> bool:
    try:
        name_to_wire(name)
    except (ValueError, UnicodeError):
        return False
    return True


def _valid(record: Record) -> bool:
    """Whether the record can be written on the wire (a Service name or externalName beyond DNS's
    limits is left out rather than breaking every other answer)."""
    if record.rtype in (RType.CNAME, RType.PTR, RType.NS, RType.SRV):
        return _valid_name(record.name) and _valid_name(record.value[-1])
    return _valid_name(record.name)


def _key(name: str, rtype: int) -> bytes:
    return name_to_wire(name) + struct.pack("!HH", rtype, CLASS_IN)


_EMPTY: tuple[frozenset[Record], frozenset[str]] = (frozenset(), frozenset())


class Records:
    """The rendered records of one cluster. `answer.resolve` reads `templates`, `cname_only`,
    `existing`, `nodata`, `nxdomain` and `owns()`; the rest is bookkeeping for incremental updates."""

    def __init__(self, zone: str = "cluster.local", ttl: int = 5, *, serial: int = 1):
        self.zone = zone.strip(".").lower()
        self.zone_wire = name_to_wire(self.zone)
        self.ttl = ttl
        self.serial = serial
        self.templates: dict[bytes, Template] = {}
        self.cname_only: dict[bytes, Template] = {}
        self.existing: set[bytes] = set()
        self.replies: dict[bytes, bytes] = {}
        self._rotation = 0
        # Names whose CNAME chain ends outside our zones, by wire name: the target to look up upstream.
        self.external_targets: dict[bytes, str] = {}
        self.nodata: Template
        self.nxdomain: Template
        self._existence: dict[str, int] = {}
        self._by_name: dict[str, dict[Record, int]] = {}
        self._contributions: dict[tuple[str, ...], tuple[frozenset[Record], frozenset[str]]] = {}
        self._template_keys: dict[str, list[bytes]] = {}
        self._references: dict[str, set[str]] = {}
        self._dependents: dict[str, set[str]] = {}
        self._services: dict[tuple[str, str], dict] = {}
        self._slice_owner: dict[tuple[str, str], tuple[str, str]] = {}
        self._slices_by_service: dict[tuple[str, str], dict[str, dict]] = {}
        self._render_negatives()
        self._replace(("zone",), zone_records(self.zone), set())

    @classmethod
    def from_objects(
        cls, services: Iterable[dict] = (), endpoint_slices: Iterable[dict] = (), pods: Iterable[dict] = (),
        **options,
    ) -> Records:
        records = cls(**options)
        for endpoint_slice in endpoint_slices:
            records.set_endpoint_slice(endpoint_slice)
        for service in services:
            records.set_service(service)
        for pod in pods:
            records.set_pod(pod)
        return records

    # --- what the hot path asks -------------------------------------------------------------------

    def owns(self, lname: bytes) -> bool:
        """Whether a lower-cased wire name is ours to answer: inside the zone, or a name we hold (the
        PTR names of service and endpoint addresses)."""
        if lname in self.existing:
            return True
        cut = len(lname) - len(self.zone_wire)
        if cut < 0 or not lname.endswith(self.zone_wire):
            return False
        offset = 0
        while offset < cut:
            offset += lname[offset] + 1
        return offset == cut

    def next_rotation(self, count: int) -> int:
        self._rotation += 1
        return self._rotation % count

    def remember(self, query: bytes, reply: bytes) -> None:
        """Keeps a UDP reply built from the records, by the query's bytes after the ID."""
        if len(self.replies) >= MAX_REMEMBERED:
            self.replies.clear()
        self.replies[query[2:]] = reply[2:]

    def zone_lines(self) -> list[str]:
        """Every record as a zone-file line (`name ttl IN type rdata`), answers as this server gives them:
        for loading the same data into another DNS server."""
        lines = []
        for name in sorted(self._by_name):
            ordered = sorted(self._by_name[name])
            for rtype in sorted({r.rtype for r in ordered}):
                answers, _ = self._answers([r for r in ordered if r.rtype == rtype], set())
                lines.extend(" ".join(rr.toZone().split()) for rr in answers)
        return lines

    # --- changes ----------------------------------------------------------------------------------

    def set_service(self, service: dict) -> None:
        key = namespace_and_name(service)
        self._services[key] = service
        self._refresh_service(key)

    def delete_service(self, service: dict) -> None:
        key = namespace_and_name(service)
        self._services.pop(key, None)
        self._refresh_service(key)

    def set_endpoint_slice(self, endpoint_slice: dict) -> None:
        key = namespace_and_name(endpoint_slice)
        labels = (endpoint_slice.get("metadata") or {}).get("labels") or {}
        owner = (key[0], labels[SERVICE_NAME_LABEL]) if labels.get(SERVICE_NAME_LABEL) else None
        previous = self._slice_owner.get(key)
        if previous is not None and previous != owner:
            self._detach_slice(key)
        if owner is not None:
            self._slice_owner[key] = owner
            self._slices_by_service.setdefault(owner, {})[key[1]] = endpoint_slice
            self._refresh_service(owner)

    def delete_endpoint_slice(self, endpoint_slice: dict) -> None:
        self._detach_slice(namespace_and_name(endpoint_slice))

    def set_pod(self, pod: dict) -> None:
        key = namespace_and_name(pod)
        self._replace(("pod", *key), pod_records(pod, self.zone), set())

    def delete_pod(self, pod: dict) -> None:
        self._replace(("pod", *namespace_and_name(pod)), set(), set())

    def set_serial(self, serial: int) -> None:
        """The SOA serial (CoreDNS uses the time of the last change, in seconds)."""
        if serial != self.serial:
            self.serial = serial
            self.replies.clear()
            self._render_negatives()
            self._render_name(self.zone)

    def _detach_slice(self, key: tuple[str, str]) -> None:
        owner = self._slice_owner.pop(key, None)
        if owner is None:
            return
        slices = self._slices_by_service.get(owner, {})
        slices.pop(key[1], None)
        if not slices:
            self._slices_by_service.pop(owner, None)
        self._refresh_service(owner)

    def _refresh_service(self, key: tuple[str, str]) -> None:
        service = self._services.get(key)
        if service is None:
            self._replace(("service", *key), set(), set())
            return
        slices = self._slices_by_service.get(key, {}).values()
        self._replace(("service", *key), *service_records(service, slices, self.zone))

    def _replace(self, source: tuple[str, ...], records: set[Record], names: set[str]) -> None:
        new_records = frozenset(r for r in records if _valid(r))
        new_names = frozenset(n.lower() for n in names if _valid_name(n)) | {
            r.name for r in new_records
        }
        old_records, old_names = self._contributions.get(source, _EMPTY)
        if new_records == old_records and new_names == old_names:
            return
        self.replies.clear()
        if new_records or new_names:
            self._contributions[source] = (new_records, new_names)
        else:
            self._contributions.pop(source, None)
        touched: set[str] = set()
        for record in old_records - new_records:
            bucket = self._by_name[record.name]
            bucket[record] -= 1
            if not bucket[record]:
                del bucket[record]
                touched.add(record.name)
            if not bucket:
                del self._by_name[record.name]
        for record in new_records - old_records:
            bucket = self._by_name.setdefault(record.name, {})
            bucket[record] = bucket.get(record, 0) + 1
            touched.add(record.name)
        for name in old_names - new_names:
            self._count_existence(name, -1)
        for name in new_names - old_names:
            self._count_existence(name, +1)
        stale = set(touched)
        for name in touched:
            stale |= self._dependents.get(name, set())
        for name in stale:
            self._render_name(name)

    def _count_existence(self, name: str, delta: int) -> None:
        """A name exists, and so does every ancestor inside the zone (empty non-terminals answer NODATA,
        not NXDOMAIN)."""
        labels = name.split(".")
        in_zone = name == self.zone or name.endswith("." + self.zone)
        depth = len(labels) - len(self.zone.split(".")) + 1 if in_zone else 1
        for start in range(depth):
            ancestor = ".".join(labels[start:])
            count = self._existence.get(ancestor, 0) + delta
            if count:
                if count == 1 and delta > 0:
                    self.existing.add(name_to_wire(ancestor))
                self._existence[ancestor] = count
            else:
                del self._existence[ancestor]
                self.existing.discard(name_to_wire(ancestor))

    # --- rendering --------------------------------------------------------------------------------

    def _render_negatives(self) -> None:
        soa = soa_record(self.zone, self.ttl, self.serial)
        self.nodata = negative(Rcode.NOERROR, soa)
        self.nxdomain = negative(Rcode.NXDOMAIN, soa)

    def _rr(self, record: Record, srv_weight: int = 100) -> RR:
        value = record.value
        match record.rtype:
            case RType.A:
                rdata = A(value[0])
            case RType.AAAA:
                rdata = AAAA(value[0])
            case RType.CNAME:
                rdata = CNAME(value[0])
            case RType.PTR:
                rdata = PTR(value[0])
            case RType.NS:
                rdata = NS(value[0])
            case RType.TXT:
                rdata = TXT(value[0])
            case RType.SRV:
                rdata = SRV(priority=0, weight=srv_weight, port=value[0], target=value[1])
            case RType.SOA:
                rdata = SOA(f"ns.dns.{self.zone}", f"hostmaster.{self.zone}",
                            (self.serial & 0xFFFFFFFF, 7200, 1800, 86400, self.ttl))
            case _:
                raise ValueError(f"no rendering for {record.rtype!r}")
        return RR(record.name, record.rtype, rclass=CLASS_IN, ttl=self.ttl, rdata=rdata)

    def _answers(self, records: list[Record], references: set[str]) -> tuple[list[RR], list[RR]]:
        """Resource records for an answer section, SRV weights shared out as CoreDNS does (100 / n), and
        the addresses of SRV targets as additional records."""
        srv_count = sum(1 for r in records if r.rtype == RType.SRV)
        answers = [self._rr(r, 100 // srv_count if r.rtype == RType.SRV else 100) for r in records]
        additional = []
        for target in sorted({r.value[1] for r in records if r.rtype == RType.SRV}):
            references.add(target)
            additional.extend(
                self._rr(r) for r in sorted(self._by_name.get(target, ())) if r.rtype in (RType.A, RType.AAAA)
            )
        return answers, additional

    def _render_name(self, name: str) -> None:
        wire = name_to_wire(name)
        for key in self._template_keys.pop(name, ()):
            self.templates.pop(key, None)
        self.cname_only.pop(wire, None)
        self.external_targets.pop(wire, None)
        for reference in self._references.pop(name, ()):
            dependents = self._dependents.get(reference)
            if dependents is not None:
                dependents.discard(name)
                if not dependents:
                    del self._dependents[reference]
        bucket = self._by_name.get(name)
        if not bucket:
            return
        references: set[str] = set()
        keys: list[bytes] = []

        def put(rtype: int, records: list[Record], chain: list[Record] = ()) -> None:
            answers, additional = self._answers(records, references)
            cnames = [self._rr(c) for c in chain]
            template = render(name, rtype, cnames + answers, additional)
            if rtype in (RType.A, RType.AAAA) and len(answers) > 1:
                count = min(len(answers), MAX_ROTATIONS)
                offsets = [i * len(answers) // count for i in range(1, count)]
                rotated = [render(name, rtype, cnames + answers[o:] + answers[:o], additional) for o in offsets]
                template = dataclasses.replace(template, rotations=(template, *rotated))
            key = _key(name, rtype)
            self.templates[key] = template
            keys.append(key)

        cnames = sorted(r for r in bucket if r.rtype == RType.CNAME)
        if cnames:
            chain = [cnames[0]]
            seen = {name}
            while len(chain) < MAX_CNAME_CHAIN:
                target = chain[-1].value[0]
                if target in seen:
                    break
                seen.add(target)
                references.add(target)
                target_records = sorted(self._by_name.get(target, ()))
                next_cnames = [r for r in target_records if r.rtype == RType.CNAME]
                if next_cnames:
                    chain.append(next_cnames[0])
                    continue
                for rtype in {r.rtype for r in target_records}:
                    put(rtype, [r for r in target_records if r.rtype == rtype], chain)
                break
            self.cname_only[wire] = render(name, RType.CNAME, [self._rr(c) for c in chain], [])
            final_target = chain[-1].value[0]
            if not self.owns(name_to_wire(final_target)):
                self.external_targets[wire] = final_target
        else:
            ordered = sorted(bucket)
            rtypes = {r.rtype for r in ordered}
            for rtype in rtypes:
                put(rtype, [r for r in ordered if r.rtype == rtype])
            if len(rtypes) == 1:
                # ANY at a name with one type is that type's answer (the question is the query's own).
                key = _key(name, RType.ANY)
                self.templates[key] = self.templates[keys[-1]]
                keys.append(key)
            else:
                put(RType.ANY, ordered)
        self._template_keys[name] = keys
        if references:
            self._references[name] = references
            for reference in references:
                self._dependents.setdefault(reference, set()).add(name)
