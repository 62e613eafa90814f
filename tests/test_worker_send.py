"""How the worker turns a connection's output into one send: small pieces joined, big ones gathered as is."""
from target.worker import COALESCE_BELOW, _after, _coalesce


def test_small_pieces_are_joined_and_big_ones_kept():
    big = memoryview(bytearray(b"B" * COALESCE_BELOW))
    pieces, size = _coalesce([b"h1", memoryview(b"d1"), big, b"h2", b"d2", b"p"])
    assert pieces == [b"h1d1", big, b"h2d2p"] and pieces[1] is big
    assert size == 4 + COALESCE_BELOW + 5


def test_a_batch_of_small_pieces_is_one():
    pieces, size = _coalesce([b"h1", memoryview(b"d1" * 2048), b"p", b"h2"])
    assert pieces == [b"h1" + b"d1" * 2048 + b"ph2"] and size == 4096 + 5


def test_a_single_piece_is_passed_through():
    data = memoryview(b"x" * 100)
    pieces, size = _coalesce([data])
    assert pieces[0] is data and size == 100


def test_after_a_partial_send_the_rest_follows():
    assert [bytes(b) for b in _after([b"abc", b"defg", b"h"], 5)] == [b"fg", b"h"]
    assert _after([b"abc"], 3) == []
