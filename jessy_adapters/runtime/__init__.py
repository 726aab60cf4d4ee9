"""Code that runs *inside* backend environments (no jessy imports, no core dependencies).

Entry scripts find this folder through the JESSY_RUNTIME_PATH variable the runner sets.
"""
