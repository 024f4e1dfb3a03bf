"""tests/vm/guest holds the tests that run inside the kernel VM (``QVW_IN_VM=1``).

On the host they are not collected at all: the host's ``kernel_vm`` test
(test_kernel_vm.py) boots the VM and runs them there as one pytest session.
"""

import os

collect_ignore_glob = [] if os.environ.get("QVW_IN_VM") else ["guest/*"]
