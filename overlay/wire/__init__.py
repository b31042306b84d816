"""Wire formats, pure: Ethernet, ARP, IPv4, ICMP, UDP, TCP, VXLAN, the internet checksum and pcap files.

One module per protocol, each with frozen dataclasses and `decode(buf)` / `encode(obj)`; every decoder
raises only `errors.DecodeError` on bad input. `fastpath` is the per-frame path on raw buffers.
"""
