"""The kernel VM: boot Debian's 6.1 kernel under QEMU on this machine's own root filesystem.

This machine's kernel has no WireGuard module; Debian 12's kernel has one. So
the kernel's WireGuard (the NixOS production path) is tested in a VM that
boots that kernel (unpacked into a cache by ``tests/vm/image.sh``, never
installed) with a small initramfs, mounts the host's ``/`` read-only over 9p
with a tmpfs overlay, and runs one command: the same programs, the same
``.venv``, the same checkout, but the guest's own kernel and no way to write
to the host except its job directory.

    vm = Vm()
    if vm.missing(): ...            # what is not set up (scripts/setup.sh does it)
    r = vm.run("cd /repo && .venv/bin/pytest ...", timeout=300)
    r.exit_code, r.console, r.seconds, r.job   # the job dir holds what the guest wrote

Facts this is built on (measured on this machine, December 2026):
- KVM is present but unusable (``-cpu host`` aborts on MSR 0x10a): TCG with
  ``-cpu max`` (which also gives RDRAND, so ``wg genkey`` never waits for entropy).
- No network device at all (``-nodefaults -nic none``): nothing the guest
  does can reach a network; its namespaces and veths are its own.
- Boot to the first command 2-3 s; Python is about 50x slower than on the
  host, so a caller runs one pytest session per boot, not one boot per test.
- The command travels in a file (quotes do not survive the kernel command
  line); its exit code comes back on the serial console as ``QVW-EXIT <n>``;
  the guest powers off through sysrq and QEMU exits (``-no-reboot``).

``mode="systemd"`` boots with systemd as PID 1 instead (Debian's systemd 252,
from this machine's root), into ``qvw.target``: basic.target and the job,
none of the services this machine has enabled. The job is a unit
(``qvw-job.service``) that runs the command, prints its exit code and
powers off through systemd. Files given in ``overlay`` (guest path -> text;
``symlinks``: guest path -> target) are put on the guest's root first:
units, and ``qvw.target.wants/`` links to start them at boot.

``state_disk`` (an ext4 image, ``make_state_disk``) holds the overlay's upper
directory instead of a tmpfs: boot twice with the same one and the second boot
finds what the first wrote (a reboot, with the host's root still read-only).

``python -m tests.vm.runner [--systemd] COMMAND...`` runs one command in the VM.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("QVW_VM_CACHE", "/var/cache/qbt-vpn-watchdog/vm"))
HERE = Path(__file__).resolve().parent
QEMU = "qemu-system-x86_64"
EXIT_MARK = re.compile(rb"^QVW-EXIT (\d+)\s*$", re.M)


# systemd mode: a target of our own (this machine has services enabled that must not
# start in the guest) and the job as a unit. The exit line and the power-off come
# from the unit, so systemd stops everything else cleanly first.
SYSTEMD_JOB = {
    "/etc/systemd/system/qvw.target": """[Unit]
Description=qbt-vpn-watchdog VM test
Requires=basic.target qvw-job.service
After=basic.target
AllowIsolate=yes
""",
    "/etc/systemd/system/qvw-job.service": """[Unit]
Description=qbt-vpn-watchdog VM job
After=basic.target

[Service]
Type=oneshot
Environment=QVW_IN_VM=1 HOME=/root LANG=C.UTF-8
WorkingDirectory=/run/qvw-job
ExecStart=/bin/sh -c 'bash /run/qvw-job/command </dev/null >/dev/console 2>&1; \
echo "QVW-EXIT $?" >/dev/console; systemctl poweroff --no-block'
TimeoutStartSec=infinity
""",
}
# Debian enables these at sysinit; in the guest they only wait for a network there is
# none of. systemd-tmpfiles-setup walks the host's tree over 9p: 39 s of a 47 s boot.
SYSTEMD_MASKED = {
    f"/etc/systemd/system/{unit}": "/dev/null"
    for unit in (
        "systemd-timesyncd.service",
        "systemd-pstore.service",
        "systemd-tmpfiles-setup.service",
    )
}


@dataclass(frozen=True)
class VmResult:
    exit_code: int | None  # None: the guest never reported one (crash, timeout)
    console: str  # the serial console: kernel messages and the command's output
    seconds: float  # from starting QEMU to QEMU gone
    job: Path  # the job directory the guest saw read-write at /run/qvw-job
    timed_out: bool = False


class Vm:
    def __init__(self, cache: Path = CACHE, memory_mib: int = 1024, cpus: int = 2) -> None:
        self.cache = cache
        self.memory_mib = memory_mib
        self.cpus = cpus

    def missing(self) -> str | None:
        """What is not set up (None: ready). ``scripts/setup.sh`` sets it all up."""
        if shutil.which(QEMU) is None:
            return f"{QEMU} is not installed (Debian package qemu-system-x86)"
        if os.geteuid() != 0:
            return "the kernel VM needs root (QEMU exports / to the guest read-only)"
        for name in ("VERSION", "vmlinuz", "initramfs.cpio.gz"):
            if not (self.cache / name).exists():
                return f"no {self.cache / name}: run tests/vm/image.sh (scripts/setup.sh does)"
        return None

    def qemu_argv(self, job: Path, mode: str, state_disk: Path | None = None) -> list[str]:
        append = [
            "console=ttyS0",
            "panic=-1",  # a panic reboots, and -no-reboot turns that into QEMU exiting
            "quiet",
            "loglevel=4",
            f"qvw.mode={mode}",
            f"qvw.cache={self.cache}",
        ]
        if mode == "systemd":
            append += ["systemd.unit=qvw.target", "systemd.show_status=error"]
        disk: list[str] = []
        if state_disk is not None:
            append.append("qvw.state=1")
            disk = ["-drive", f"file={state_disk},if=virtio,format=raw"]
        return [
            QEMU,
            "-accel", "tcg", "-cpu", "max",
            "-m", str(self.memory_mib), "-smp", str(self.cpus),
            "-nodefaults", "-nic", "none", "-display", "none", "-no-reboot",
            "-kernel", str(self.cache / "vmlinuz"),
            "-initrd", str(self.cache / "initramfs.cpio.gz"),
            "-append", " ".join(append),
            "-chardev", f"file,id=con,path={job / 'console.log'}",
            "-serial", "chardev:con",
            "-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
            "-device", "virtio-9p-pci,fsdev=root,mount_tag=hostroot",
            "-fsdev", f"local,id=job,path={job},security_model=none,multidevs=remap",
            "-device", "virtio-9p-pci,fsdev=job,mount_tag=job",
            *disk,
        ]  # fmt: skip

    def run(
        self,
        command: str,
        *,
        timeout: float = 300.0,
        mode: str = "command",
        overlay: dict[str, str] | None = None,
        symlinks: dict[str, str] | None = None,
        state_disk: Path | None = None,
        on_output=None,
    ) -> VmResult:
        """Boot, run ``command`` (bash) as root in the guest, power off; never raises on failure.

        ``on_output(text)`` receives the console as it comes (for progress).
        The job directory is left for the caller to read; remove it when done.
        """
        problem = self.missing()
        if problem:
            raise RuntimeError(f"kernel VM not ready: {problem}")
        job = Path(tempfile.mkdtemp(prefix="qvw-vm-job-"))
        (job / "command").write_text(command + "\n")
        shutil.copy(HERE / "stage2.sh", job / "stage2")
        files = dict(overlay or {})
        links = dict(symlinks or {})
        if mode == "systemd":
            files.update(SYSTEMD_JOB)
            links.update(SYSTEMD_MASKED)
        for path, text in files.items():
            dest = job / "overlay" / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
        for path, target in links.items():
            dest = job / "overlay" / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(target)
        console = job / "console.log"
        console.touch()
        started = time.monotonic()
        proc = subprocess.Popen(
            self.qemu_argv(job, mode, state_disk),
            stdin=subprocess.DEVNULL,
            stdout=open(job / "qemu.log", "wb"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        timed_out = False
        seen = 0
        try:
            while True:
                done = proc.poll() is not None
                if on_output is not None:
                    data = console.read_bytes()
                    if len(data) > seen:
                        on_output(data[seen:].decode(errors="replace"))
                        seen = len(data)
                if done:
                    break
                if time.monotonic() - started > timeout:
                    timed_out = True
                    break
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # our own QEMU, started in its own session
                proc.wait()
        seconds = time.monotonic() - started
        raw = console.read_bytes()
        marks = EXIT_MARK.findall(raw)
        text = raw.decode(errors="replace")
        if proc.returncode not in (0, -signal.SIGKILL):
            text += "\n[qemu] " + (job / "qemu.log").read_text(errors="replace")
        return VmResult(
            exit_code=int(marks[-1]) if marks else None,
            console=text,
            seconds=seconds,
            job=job,
            timed_out=timed_out,
        )


def make_state_disk(path: Path, mib: int = 256) -> Path:
    """An empty ext4 image for ``Vm.run(state_disk=...)``."""
    with open(path, "wb") as f:
        f.truncate(mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(path)], check=True, capture_output=True)
    return path


def main(argv: list[str]) -> int:
    mode = "command"
    if argv[:1] == ["--systemd"]:
        mode, argv = "systemd", argv[1:]
    if not argv:
        print("usage: python -m tests.vm.runner [--systemd] COMMAND...", file=sys.stderr)
        return 2
    vm = Vm()
    problem = vm.missing()
    if problem:
        print(f"kernel VM not ready: {problem}", file=sys.stderr)
        return 2
    command = argv[0] if len(argv) == 1 else shlex.join(argv)
    r = vm.run(command, mode=mode, on_output=lambda t: print(t, end="", flush=True))
    print(f"\n[vm] exit {r.exit_code} after {r.seconds:.1f} s; job directory {r.job}")
    return 1 if r.exit_code is None else r.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
