"""Discovery of dongles on the LAN (mDNS / DNS-SD ``_usbip._tcp``)."""
