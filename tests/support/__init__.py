"""What the tests share and are not tests themselves: drivers, factories, signed payloads, servers."""
