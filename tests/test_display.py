"""How values read on the console: as a user types them."""
from __future__ import annotations

import pytest

from trainer.core import display


@pytest.mark.parametrize("value, shown", [
    (5000.0, "5000"), (5000, "5000"), (0.1, "0.1"), (0.0011842729505689438, "0.0011842729505689438"),
    (True, "true"), (False, "false"), ([64.0, 32], "[64,32]"), ("auto", "auto"), (None, "None"), (1e20, "1e+20"),
])
def test_typed_shows_a_value_as_typed(value, shown):
    assert display.typed(value) == shown
