#!/usr/bin/env python3
"""Independent check of the TLS pool, written from docs/pool.md alone.

An application accepts a TCP connection and passes it to the pool with
{"v":1,"service":SERVICE}; openssl s_client on the far side completes TLS,
and its bytes arrive as plaintext on the returned fd, both ways. The
answer's peer is printed for the caller to judge.

usage: pool_check.py POOL_SOCKET SERVICE CAFILE [CERT KEY]
Prints the answer line on success; exits non-zero with a reason otherwise.
"""
import json
import os
import socket
import subprocess
import sys


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def main():
    pool_path, service, cafile = sys.argv[1:4]
    cert_args = []
    if len(sys.argv) > 4:
        cert_args = ["-cert", sys.argv[4], "-key", sys.argv[5]]

    ln = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ln.bind(("127.0.0.1", 0))
    ln.listen(1)
    port = ln.getsockname()[1]

    remote = subprocess.Popen(
        ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", "web.test",
         "-CAfile", cafile, "-verify_return_error", "-quiet"] + cert_args,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    ln.settimeout(20)
    conn, _ = ln.accept()
    ln.close()

    # The request: one JSON line, exactly one fd in SCM_RIGHTS.
    pool = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pool.settimeout(20)
    pool.connect(pool_path)
    line = json.dumps({"v": 1, "service": service}).encode() + b"\n"
    socket.send_fds(pool, [line], [conn.fileno()])
    conn.close()  # the pool holds its own copy now

    data = b""
    fds = []
    while not data.endswith(b"\n"):
        chunk, got, _flags, _addr = socket.recv_fds(pool, 65536, 4)
        fds += got
        if not chunk:
            break
        data += chunk
    pool.close()
    answer = json.loads(data)
    if not answer.get("ok"):
        fail("pool refused: %r" % answer)
    if len(fds) != 1:
        fail("success came with %d fds" % len(fds))
    plain = socket.socket(fileno=fds[0])
    plain.settimeout(20)

    # Far side to app.
    remote.stdin.write(b"from the far side\n")
    remote.stdin.flush()
    got = b""
    while not got.endswith(b"\n"):
        chunk = plain.recv(4096)
        if not chunk:
            break
        got += chunk
    if got != b"from the far side\n":
        fail("app read %r" % got)

    # App to far side, then close both ways.
    plain.sendall(b"from the app\n")
    plain.shutdown(socket.SHUT_WR)
    remote.stdin.close()
    out = remote.stdout.read()
    remote.wait(timeout=20)
    plain.close()
    if b"from the app\n" not in out:
        fail("s_client printed %r" % out)
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
