import socket

import pytest


def test_network_is_blocked_in_tests():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(RuntimeError, match="network disabled in tests"):
        s.connect(("93.184.216.34", 80))
    s.close()
