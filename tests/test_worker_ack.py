"""The worker acknowledges a big segment's data at once (TCP_QUICKACK); a gone connection is left alone."""
import socket

from target.worker import _ack_now


def test_a_delayed_ack_connection_leaves_the_delayed_mode():
    """The socket's quick-ACK flag, which the kernel reports as "not in delayed-ACK mode" (with no data received, no
    delayed-ACK timer can end that mode on its own between the two calls)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname()):
            server, _ = listener.accept()
            with server:
                server.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)   # delayed ACKs (request-response)
                assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 0
                _ack_now(server)
                assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1


def test_a_closed_socket_is_left_alone():
    sock = socket.socket()
    sock.close()
    _ack_now(sock)                      # no exception: the connection's own receive reports its end
