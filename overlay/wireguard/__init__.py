"""WireGuard (Noise_IKpsk2 handshake, ChaCha20-Poly1305 transport), byte-compatible with the protocol:
`crypto`, `messages`, `handshake`, `replay` and `device` are pure; `adapter` puts a device on UDP."""
