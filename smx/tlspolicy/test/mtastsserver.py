# -*- test-case-name: smx.tlspolicy.test.test_integration_mtasts -*-
"""
A real HTTPS server (twisted.web) on 127.0.0.1 serving MTA-STS policies
with a certificate of a CA made at test time (trustme), for the tests of
L{smx.tlspolicy.mtasts}.

    server = startPolicyServer(ca, ["mta-sts.remote.test"])
    server.policies["mta-sts.remote.test"] = (200, "text/plain", POLICY)
    ... fetch from port server.port, trusting ca ...
    yield server.stop()

C{server.requests} lists the host names asked for, in order.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from twisted.internet import defer, ssl
from twisted.web import resource, server


class _PolicyPage(resource.Resource):
    isLeaf = True

    def __init__(self, owner: "PolicyServer") -> None:
        resource.Resource.__init__(self)
        self.owner = owner

    def render_GET(self, request: Any) -> Any:
        host = (request.getHeader(b"host") or b"").decode("ascii").split(":")[0]
        self.owner.requests.append(host)
        if request.path != b"/.well-known/mta-sts.txt":
            request.setResponseCode(404)
            return b"no such page\n"
        answer = self.owner.policies.get(host)
        if answer is None:
            request.setResponseCode(404)
            return b"no policy\n"
        if answer == "hang":
            self.owner.hanging.append(request)
            return server.NOT_DONE_YET
        code, contentType, body = answer
        request.setResponseCode(code)
        if code in (301, 302):
            request.setHeader(b"location", body.encode("ascii"))
            return b""
        request.setHeader(b"content-type", contentType.encode("ascii"))
        return body.encode("utf-8") if isinstance(body, str) else body

    def render_POST(self, request: Any) -> bytes:
        host = (request.getHeader(b"host") or b"").decode("ascii").split(":")[0]
        self.owner.posts.append(
            (
                host,
                request.path.decode("ascii"),
                (request.getHeader(b"content-type") or b"").decode("ascii"),
                request.content.read(),
            )
        )
        request.setResponseCode(self.owner.postStatus)
        return b"thanks\n"


class PolicyServer:
    """
    The running server.

    @ivar port: the TCP port number.
    @ivar policies: host name -> C{(status, content type, body)}, or
        C{"hang"} for a request that is never answered.
    @ivar requests: the host names asked for.
    @ivar posts: the POST requests (TLS reports): C{(host, path, content
        type, body)}; they are answered with C{postStatus}.
    """

    def __init__(self) -> None:
        self.policies = {}  # type: Dict[str, Any]
        self.requests = []  # type: List[str]
        self.posts = []  # type: List[Tuple[str, str, str, bytes]]
        self.postStatus = 200
        self.hanging = []  # type: List[Any]
        self.port = 0
        self._listening = None  # type: Any

    def stop(self) -> defer.Deferred:
        """Stop listening; drop hanging requests."""
        for request in self.hanging:
            request.channel.transport.abortConnection()
        self.hanging = []
        return defer.maybeDeferred(self._listening.stopListening)


def certificateOptions(ca: Any, names: Sequence[str]) -> Any:
    """
    Server TLS options with a certificate of C{ca} (a C{trustme.CA}) for
    C{names}.
    """
    cert = ca.issue_cert(*names)
    pem = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    pem += cert.private_key_pem.bytes()
    return ssl.PrivateCertificate.loadPEM(pem).options()


def startPolicyServer(
    ca: Any,
    names: Sequence[str],
    reactor: Any = None,
    port: int = 0,
    interface: str = "127.0.0.1",
) -> PolicyServer:
    """
    Listen with TLS on C{interface} and C{port} (default: a free one).

    @param ca: the C{trustme.CA} that issues the server's certificate.
    @param names: the names of the certificate.
    @return: the L{PolicyServer}.
    @raise twisted.internet.error.CannotListenError: if the port is taken.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    owner = PolicyServer()
    site = server.Site(_PolicyPage(owner))
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    owner._listening = reactor.listenSSL(
        port, site, certificateOptions(ca, names), interface=interface
    )
    owner.port = owner._listening.getHost().port
    return owner
