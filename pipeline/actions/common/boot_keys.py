"""The keys LAVA's boot blocks accept beyond what this dispatcher acts on, so that LAVA's jobs load.

LAVA's schema gives every boot method ``parameters`` (the bootloader's and
the kernel's messages), ``soft_reboot``, ``ignore_kernel_messages``; qemu
and u-boot also take ``connection`` and ``transfer_overlay``. They are
checked for their shape and otherwise change nothing here (README, "LAVA
compatibility" says so).
"""

from __future__ import annotations

from typing import Annotated

from pipeline.blocks import ActionBase
from pipeline.fields import Field, Strict, as_list, or_string
from pipeline.schema import BeforeValidator


class BootMessages(Strict):
    bootloader_final_message: str | None = Field(None, alias="bootloader-final-message")
    kernel_start_message: str | None = Field(None, alias="kernel-start-message")
    shutdown_message: str | None = Field(None, alias="shutdown-message")


class TransferOverlay(Strict):
    download_command: str | None = None
    unpack_command: str
    transfer_method: str | None = None


class LavaBootKeys(ActionBase):
    parameters: BootMessages | None = None
    soft_reboot: Annotated[list[str], BeforeValidator(as_list, or_string)] | None = None
    ignore_kernel_messages: bool | None = None
    connection: str | None = None
    transfer_overlay: TransferOverlay | None = None
