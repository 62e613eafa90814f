"""The worker acknowledges a big segment's data at once (TCP_QUICKACK); a gone connection is left alone."""
import socket

from target.worker import _ack_now


def test_a_delayed_ack_connection_acknowledges_at_once():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname()) as initiator:
            server, _ = listener.accept()
            with server:
                initiator.sendall(b"x" * 65536)
                server.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)   # delayed ACKs (request-response)
                assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 0
                _ack_now(server)
                assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1


def test_a_closed_socket_is_left_alone():
    sock = socket.socket()
    sock.close()
    _ack_now(sock)                      # no exception: the connection's own receive reports its end
