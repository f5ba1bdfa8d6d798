#!/usr/bin/env python3
"""A malicious registry for berth's tests (loopback, random port).

Serves one small image, `<repo>:1` (a 159-byte config and a 4 KiB layer),
in every repository; the repository's first path component picks how the
config blob (or the manifests) is served:

  good/...          honestly
  endless/...       blobs: the right bytes, then more, without end
                    (no Content-Length, the connection stays open)
  liar/...          blobs: Content-Length 1 GiB, then 1 GiB of bytes
  short/...         blobs: half the bytes, no Content-Length, then close
  hang/...          blobs: Content-Length right, half the bytes, then silence
  hangheaders/...   blobs: no answer at all (the request is read, nothing sent)
  slowmanifest/...  manifests: no answer at all
  hugemanifest/...  manifests by tag: an endless body
  deep/...          manifests: `deep/x:1` is an index nested DEPTH levels
                    (index -> index -> ... -> the image), DEPTH from the tag
                    (`deep/x:300`); `deep/x:diamond` is 15 levels where each
                    index names the next one twice (2^15 paths, 15 manifests)
  many/...          manifests: `many/x:N` has N layers (the same blob)
  stallupload/...   uploads: the session opens, the PUT's body is never read

Plain files (`ADD <url>`, `berth import <url>`), outside /v2/:

  /files/ok.tar     a small tar (one file, `hello`), honestly
  /files/endless    a tar that never ends (no Content-Length: a file
                    header announcing 4 GiB, then zeros without end)
  /files/huge       Content-Length 64 GiB, then the same endless tar
  /files/hang       Content-Length 1 MiB, 64 KiB of it, then silence

GET /_stats answers {"sent": {path: bytes written}, "requests": [paths]}.
Prints the port on stdout, then serves until killed.
"""

import hashlib
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONFIG = json.dumps({"architecture": "amd64", "os": "linux",
                     "rootfs": {"type": "layers", "diff_ids": []},
                     "config": {"Env": ["PATH=/usr/bin"]},
                     "history": [{"created_by": "x"}]}).encode()
CONFIG = CONFIG + b" " * (159 - len(CONFIG))
assert len(CONFIG) == 159
LAYER = bytes((i * 7 + 3) % 251 for i in range(4096))
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


BLOBS = {digest(CONFIG): CONFIG, digest(LAYER): LAYER}


def image_manifest(layers=None):
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar",
             "digest": digest(LAYER), "size": len(LAYER)}
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(CONFIG), "size": len(CONFIG)},
        "layers": [layer] * (layers or 1),
    }).encode()


MANIFESTS = {}  # digest -> (bytes, media type)


def put(body, media_type):
    d = digest(body)
    MANIFESTS[d] = (body, media_type)
    return d


IMAGE = image_manifest()
put(IMAGE, OCI_MANIFEST)


def index_of(children):
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                       "manifests": children}).encode()


def nested(depth, twice=False):
    """An index `depth` levels above the image; returns its bytes."""
    body, mt = IMAGE, OCI_MANIFEST
    for _ in range(depth):
        d = put(body, mt)
        child = {"mediaType": mt, "digest": d, "size": len(body),
                 "platform": {"os": "linux", "architecture": "amd64"}}
        body, mt = index_of([child, child] if twice else [child]), OCI_INDEX
    return body


STATS = {"sent": {}, "requests": []}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def count(self, n):
        with LOCK:
            STATS["sent"][self.path] = STATS["sent"].get(self.path, 0) + n

    def send(self, data):
        self.wfile.write(data)
        self.wfile.flush()
        self.count(len(data))

    def reply(self, code, body=b"", ctype="application/json", length=True):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.send(body)

    def stall(self):
        # Keep the connection open and silent until the client gives up.
        try:
            while True:
                time.sleep(0.5)
                if self.client_gone():
                    return
        except Exception:
            return

    def client_gone(self):
        try:
            self.connection.setblocking(False)
            try:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
            except BlockingIOError:
                return False
            finally:
                self.connection.setblocking(True)
        except OSError:
            return True

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        with LOCK:
            STATS["requests"].append(self.command + " " + self.path)
        path = self.path.split("?")[0]
        if path == "/_stats":
            with LOCK:
                body = json.dumps(STATS).encode()
            return self.reply(200, body)
        if path in ("/v2", "/v2/"):
            return self.reply(200, b"{}")
        if path.startswith("/files/"):
            return serve_file(self, path[len("/files/"):])
        parts = path[len("/v2/"):].split("/")
        if not path.startswith("/v2/") or len(parts) < 3:
            return self.reply(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}')
        mode = parts[0]
        kind, ref = parts[-2], parts[-1]
        try:
            if kind == "manifests":
                return self.manifest(mode, ref)
            if kind == "blobs":
                return self.blob(mode, ref)
        except (BrokenPipeError, ConnectionResetError):
            return
        return self.reply(404, b'{"errors":[{"code":"UNSUPPORTED"}]}')

    def do_POST(self):
        with LOCK:
            STATS["requests"].append(self.command + " " + self.path)
        path = self.path.split("?")[0]
        repo = path[len("/v2/"):].rsplit("/blobs/uploads", 1)[0]
        self.send_response(202)
        self.send_header("Location", "/v2/%s/blobs/uploads/session-1" % repo)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_PUT(self):
        with LOCK:
            STATS["requests"].append(self.command + " " + self.path)
        # The body is never read: the client's writes stop when the socket
        # buffers are full.
        self.stall()

    def manifest(self, mode, ref):
        if mode == "slowmanifest":
            return self.stall()
        if mode == "hugemanifest" and not ref.startswith("sha256:"):
            self.send_response(200)
            self.send_header("Content-Type", OCI_MANIFEST)
            self.end_headers()
            chunk = b" " * 65536
            try:
                while True:
                    self.send(chunk)
            except OSError:
                return
        if ref.startswith("sha256:"):
            if ref not in MANIFESTS:
                return self.reply(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
            body, mt = MANIFESTS[ref]
        elif mode == "deep":
            if ref == "diamond":
                body, mt = nested(15, twice=True), OCI_INDEX
            else:
                body, mt = nested(int(ref)), OCI_INDEX
            put(body, mt)
        elif mode == "many":
            body, mt = image_manifest(int(ref)), OCI_MANIFEST
            put(body, mt)
        else:
            body, mt = IMAGE, OCI_MANIFEST
        self.send_response(200)
        self.send_header("Content-Type", mt)
        self.send_header("Docker-Content-Digest", digest(body))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.send(body)

    def blob(self, mode, ref):
        data = BLOBS.get(ref)
        if data is None:
            return self.reply(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
        # The mode applies to the config (159 bytes); the layer is honest.
        if self.command == "HEAD" or data is not CONFIG or mode in (
                "good", "deep", "many", "slowmanifest", "hugemanifest"):
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
            body = data[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.send(body)
            return
        if mode == "hangheaders":
            return self.stall()
        self.send_response(200)
        if mode == "liar":
            self.send_header("Content-Length", str(1 << 30))
        elif mode == "hang":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            if mode == "endless":
                self.send(data)
                chunk = b"x" * 65536
                while True:
                    self.send(chunk)
            elif mode == "liar":
                chunk = data + b"y" * (65536 - len(data) % 65536)
                sent = 0
                while sent < (1 << 30):
                    self.send(chunk)
                    sent += len(chunk)
            elif mode == "short":
                self.send(data[: len(data) // 2])
            elif mode == "hang":
                self.send(data[: len(data) // 2])
                self.stall()
        except OSError:
            return


def tar_header(name, size):
    """A ustar header for a regular file of `size` bytes."""
    h = bytearray(512)
    h[0:len(name)] = name.encode()
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    assert size < 8 << 30, "ustar sizes have 11 octal digits"
    h[124:136] = ("%011o\0" % size).encode()
    h[136:148] = b"00000000000\0"
    h[156:157] = b"0"
    h[257:265] = b"ustar\x0000"
    h[148:156] = b" " * 8
    h[148:156] = ("%06o\0 " % sum(h)).encode()
    return bytes(h)


OK_TAR = tar_header("hello", 6) + b"hello\n" + b"\0" * 506 + b"\0" * 1024


def serve_file(handler, name):
    if name == "ok.tar":
        return handler.reply(200, OK_TAR, ctype="application/x-tar")
    if name not in ("endless", "huge", "hang"):
        return handler.reply(404, b"not found", ctype="text/plain")
    handler.send_response(200)
    handler.send_header("Content-Type", "application/x-tar")
    if name == "huge":
        handler.send_header("Content-Length", str(64 << 30))
    elif name == "hang":
        handler.send_header("Content-Length", str(1 << 20))
    handler.end_headers()
    if handler.command == "HEAD":
        return
    try:
        if name == "hang":
            handler.send(tar_header("big", 1 << 30) + b"\0" * (64 << 10))
            return handler.stall()
        handler.send(tar_header("big", 4 << 30))
        chunk = b"\0" * 65536
        while True:
            handler.send(chunk)
    except OSError:
        return


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
