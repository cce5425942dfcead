"""Boot methods (``boot: {method: ...}``): qemu, u-boot, minimal."""
