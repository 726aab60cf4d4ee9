"""jessy's backend contract as a pytest plugin, for backend plugins of any origin.

Installed with jessy, it registers itself (entry point `pytest11: jessy`) and stays inert
until a session asks for it: `pytest --jessy-backend NAME` (or the `jessy_backends` ini
option) then collects the contract (`jessy_adapters.contract`) for each named backend,
with the fixtures of `jessy_adapters.testing.fixtures`. docs/plugins.md, "Testing a plugin".
"""
