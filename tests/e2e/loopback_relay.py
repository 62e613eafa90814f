"""Run by netns.Lab.relay_loopback: TCP ports of the host's 127.0.0.1 made reachable on 127.0.0.1 inside network
namespaces (the one-node Ceph cluster, which listens on the host's loopback, for cluster nodes in namespaces).

    python loopback_relay.py NAMESPACE[,NAMESPACE…] PORT[,PORT…]

For each namespace and port it listens on 127.0.0.1:PORT inside the namespace (entered with setns(2) only to
create the socket) and copies each connection both ways to 127.0.0.1:PORT of its own namespace. It prints "ready"
once every socket listens and runs until killed.
"""
import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def listen_inside(namespace: str, port: int) -> socket.socket:
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    inside = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        setns(inside)
        try:
            sock = socket.create_server(("127.0.0.1", port))
        finally:
            setns(home)
    finally:
        os.close(inside)
        os.close(home)
    return sock


def pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(1 << 16):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def serve(listener: socket.socket, port: int) -> None:
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            client.close()
            continue
        upstream.settimeout(None)
        threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()


def main(namespaces: str, ports: str) -> None:
    listeners = [(listen_inside(ns, int(port)), int(port)) for ns in namespaces.split(",") for port in ports.split(",")]
    workers = [threading.Thread(target=serve, args=pair, daemon=True) for pair in listeners]
    for worker in workers:
        worker.start()
    print("ready", flush=True)
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main(*sys.argv[1:])
