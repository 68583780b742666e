"""Starts LocalStack's S3 bound to 127.0.0.1 only, with its spool directory in our scratch folder.

Two patches that LocalStack 2026.3.0 needs for that (see ../shared/S3-FACTS.md): its twisted
gateway listens on 0.0.0.0 whatever GATEWAY_LISTEN says, and S3's spool folder is hard-coded under
the system temp directory. Run by scripts/localstack with the environment already set.
"""
import os
import runpy

from twisted.internet import endpoints

_tcp4 = endpoints.TCP4ServerEndpoint


def _loopback_only(reactor, port, backlog=50, interface="127.0.0.1"):
    return _tcp4(reactor, port, backlog=backlog, interface="127.0.0.1")


endpoints.TCP4ServerEndpoint = _loopback_only

import localstack.services.s3.provider as s3_provider  # noqa: E402

s3_provider.DEFAULT_S3_TMP_DIR = os.path.join(os.environ["TALLY_LOCALSTACK_DIR"], "s3-storage")

runpy.run_module("localstack.runtime.main", run_name="__main__")
