"""Boot methods (``boot: {method: ...}``): qemu, qemu-nfs, u-boot, minimal."""
