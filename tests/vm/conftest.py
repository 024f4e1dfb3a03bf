"""tests/vm/guest and tests/vm/systemd_guest run inside the VM (``QVW_IN_VM=1``).

On the host they are not collected at all: the host's ``kernel_vm`` and
``systemd_vm`` tests (test_kernel_vm.py, test_systemd_vm.py) boot the VM and
run them there, each directory as one pytest session.
"""

import os

collect_ignore_glob = (
    [] if os.environ.get("QVW_IN_VM") else ["guest/*", "systemd_guest/*", "reboot_guest/*"]
)
