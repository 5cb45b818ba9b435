"""An RFC 8998 peer nobody here wrote: OpenSSL 4.0 as PyPI's cryptography 48 bundles it,
driven through pyOpenSSL 26.2, with TLS_SM4_GCM_SM3, curveSM2 and SM2 certificates only.

    python gm_peer.py serve DIR PORT        # DIR holds ca.crt, server.crt, server.key
    python gm_peer.py call DIR PORT PATH    # DIR holds ca.crt, client.crt, client.key

`serve` requires a client certificate from ca.crt, prints "ready", then after one handshake
the negotiated suite, group and the client's subject, and echoes one message with "echo:".
`call` sends an HTTP/1.1 GET of PATH to a gateway's HTTP/JSON surface on 127.0.0.1:PORT with
the client certificate, prints the negotiated suite and the server's subject, then the
response; or "refused" and why when the handshake or the server refuses it.
"""

import socket
import sys

from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL

LIB = Binding().lib


def context(directory, role):
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    if LIB.SSL_CTX_set_ciphersuites(ctx._context, b"TLS_SM4_GCM_SM3") != 1:
        raise SystemExit("this OpenSSL has no TLS_SM4_GCM_SM3")
    if LIB.SSL_CTX_set1_curves_list(ctx._context, b"SM2") != 1:
        raise SystemExit("this OpenSSL has no curveSM2")
    ctx.use_certificate_file(f"{directory}/{role}.crt")
    ctx.use_privatekey_file(f"{directory}/{role}.key")
    ctx.load_verify_locations(f"{directory}/ca.crt")
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: args[-1])
    return ctx


def negotiated(conn):
    # The bindings cannot name the negotiated group; SM2 is the only one this peer offers.
    subject = conn.get_peer_certificate().get_subject().CN
    return f"suite {conn.get_cipher_name()} groups offered SM2 peer {subject}"


def serve(directory, port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1)
    print("ready", flush=True)
    sock, _ = listener.accept()
    conn = SSL.Connection(context(directory, "server"), sock)
    conn.set_accept_state()
    try:
        conn.do_handshake()
        print(negotiated(conn), flush=True)
        conn.sendall(b"echo:" + conn.recv(100))
        conn.shutdown()
    except SSL.Error as e:
        print("refused", e, flush=True)
    finally:
        sock.close()


def call(directory, port, path):
    ctx = context(directory, "client")
    ctx.set_alpn_protos([b"http/1.1"])
    sock = socket.create_connection(("127.0.0.1", port))
    conn = SSL.Connection(ctx, sock)
    conn.set_tlsext_host_name(b"localhost")
    conn.set_connect_state()
    try:
        conn.do_handshake()
        print(negotiated(conn), flush=True)
        request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        conn.sendall(request.encode())
        response = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except SSL.ZeroReturnError:
                break
            if not chunk:
                break
            response += chunk
        print(response.decode("utf-8", "replace"), flush=True)
    except SSL.Error as e:
        # In TLS 1.3 a server refuses a client certificate after the client's handshake is
        # done: the alert arrives with the first read.
        print("refused", e, flush=True)
    finally:
        sock.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 5 and sys.argv[1] == "call":
        call(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        raise SystemExit(__doc__)
