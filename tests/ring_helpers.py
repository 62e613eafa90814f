"""Helpers for tests that drive an ioring.Ring directly: submit and reap until given ops complete, with a deadline."""
from ioring import Ring


def wait_all(ring: Ring, *user_data: int, timeout: float = 5.0) -> dict[int, int]:
    """Submit and reap until every user_data has completed; {user_data: res}."""
    want, got = set(user_data), {}
    for _ in range(int(timeout / 0.05)):
        ring.submit_and_wait(1, 0.05)
        got.update(ring.reap())
        if want <= got.keys():
            return got
    raise AssertionError(f"no completion for {want - got.keys()}")
