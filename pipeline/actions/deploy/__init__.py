"""Deploy methods (``deploy: {to: ...}``): tmpfs, tftp, usb and sata."""
