"""The cluster bus between the coordinators of a cluster's nodes: ZeroMQ over TCP, CURVE-authenticated.

Each node binds a ROUTER on its `listen` endpoint and connects one DEALER to each peer's; a node sends on its
DEALERs and receives on its ROUTER. Messages are the coordinator's schema (schema.py), NOTIFY type, with the
sender's node name in the body.

Authentication: with `curve_secret_key` and `peer_public_keys` (certificate files as `ringtgt keygen` writes
them) every connection is encrypted, and a ZAP handler on this loop lets in only the peers' public keys and
names each connection after its peer (ZeroMQ's User-Id), so a message claiming another node's name is
dropped. Without keys the bus is open to anyone who can reach the port: a warning says so at start.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import zmq
import zmq.auth
from zmq.utils import z85

from .schema import NOTIFY, SchemaError, decode, encode

log = logging.getLogger("ringtgt.coordinator")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
PEER_QUEUE = 1000           # messages queued per peer before sends are dropped (a snapshot repairs the loss)
RECONNECT_MAX_MS = 1000


class ClusterBusError(Exception):
    """The bus cannot start (its listen address is not this node's, say); the text says why."""


class ClusterBus:
    """Sockets to and from the peers; `on_message(peer, kind, body)` for each authenticated message."""

    def __init__(self, service, cluster, on_message: Callable[[str, str, dict], None]):
        self.node = cluster.node
        self.on_message = on_message
        context = service.context
        keys = _load_keys(cluster)
        self.peers_by_key: dict[bytes, str] = {}
        if keys is None:
            log.warning("cluster bus without CURVE keys: anyone who reaches %s can speak for a peer", cluster.listen)
        else:
            public, secret, peer_keys = keys
            self.peers_by_key = {z85.decode(key): name for name, key in peer_keys.items()}   # ZAP gives raw keys
            self.zap = context.socket(zmq.REP)
            self.zap.linger = 0
            self.zap.bind(ZAP_ENDPOINT)
            service.watch(self.zap, self._authenticate)
        self.router = context.socket(zmq.ROUTER)
        self.router.linger = 0
        if keys is not None:
            self.router.curve_server = True
            self.router.curve_publickey, self.router.curve_secretkey = public, secret
        try:
            self.router.bind(cluster.listen)
        except zmq.ZMQError as exc:
            raise ClusterBusError(f"cannot listen on {cluster.listen}: {exc}") from None
        service.watch(self.router, self._read)
        heartbeat_ms = max(100, int(cluster.dead_after * 1000))
        self.dealers: dict[str, zmq.Socket] = {}
        for name, endpoint in cluster.peers:
            sock = context.socket(zmq.DEALER)
            sock.linger = 0
            sock.sndhwm = PEER_QUEUE
            sock.immediate = True                       # no queueing for a peer we are not connected to
            sock.reconnect_ivl_max = RECONNECT_MAX_MS
            sock.heartbeat_ivl, sock.heartbeat_timeout = heartbeat_ms, 3 * heartbeat_ms   # drop dead links
            if keys is not None:
                sock.curve_publickey, sock.curve_secretkey = public, secret
                sock.curve_serverkey = peer_keys[name]
            sock.connect(endpoint)
            self.dealers[name] = sock

    def send(self, peer: str, kind: str, body: dict) -> bool:
        """Queue a message for one peer; False when it cannot take it now (not connected, or backed up)."""
        try:
            self.dealers[peer].send(encode(NOTIFY, 0, kind, {**body, "node": self.node}), zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def broadcast(self, kind: str, body: dict) -> None:
        for peer in self.dealers:
            self.send(peer, kind, body)

    def close(self) -> None:
        for sock in self.dealers.values():
            sock.close()
        self.router.close()
        if self.peers_by_key:
            self.zap.close()

    def _read(self) -> None:
        while True:
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                if len(frames) != 2:
                    raise SchemaError(f"expected one message frame, got {len(frames) - 1}")
                message = decode(frames[1].bytes)
                peer = message.body.get("node")
                if message.type != NOTIFY or peer not in self.dealers:
                    raise SchemaError(f"a {message.type} from {peer!r:.40}, not a peer's notification")
                if self.peers_by_key and frames[1].get("User-Id") != peer:
                    raise SchemaError(f"signed by {frames[1].get('User-Id')!r}, claims to be {peer!r}")
            except SchemaError as exc:
                log.warning("cluster bus: dropped a message: %s", exc)
                continue
            self.on_message(peer, message.kind, message.body)

    def _authenticate(self) -> None:
        """One ZAP request (RFC 27): CURVE with a peer's public key is let in, under the peer's name."""
        version, request_id, _domain, address, _identity, mechanism, *credentials = self.zap.recv_multipart()
        peer = self.peers_by_key.get(credentials[0]) if mechanism == b"CURVE" and credentials else None
        if peer is None:
            log.warning("cluster bus: refused a %s connection from %s: not a peer's key",
                        mechanism.decode(errors="replace"), address.decode(errors="replace"))
        self.zap.send_multipart([version, request_id, b"200" if peer else b"400",
                                 b"OK" if peer else b"not a peer", (peer or "").encode(), b""])


def _load_keys(cluster):
    """(our public key, our secret key, {peer: public key}) from the certificate files, or None."""
    if cluster.curve_secret_key is None:
        return None
    public, secret = zmq.auth.load_certificate(cluster.curve_secret_key)
    if secret is None:
        raise ValueError(f"{cluster.curve_secret_key} holds no secret key")
    peer_keys = {name: zmq.auth.load_certificate(path)[0] for name, path in cluster.peer_public_keys}
    return public, secret, peer_keys
