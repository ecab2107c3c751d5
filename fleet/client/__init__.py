"""The lab engineer's side of fleet: ``fleet login/ls/attach/detach/lease/...``.

    commands.py   Typer commands (``register(app)``), thin: parse, call, print
    session.py    attach/detach/lease workflows built from the pieces below
    keeper.py     keeps a lease alive while attached, re-attaches after drops
    api.py        REST client; every failure becomes a ClientError that says what to do
    credentials.py  ~/.config/fleet/credentials.json (mode 600), FLEET_URL/FLEET_TOKEN
    host.py       usbip tool runner + vhci-hcd/usb sysfs readers (rooted, so testable)
    preflight.py  checks that explain how to fix the workstation
    state.py      local record of attachments (shared by attach, detach and the keeper)
"""
