#!/usr/bin/env python3
"""Read-only smart-HTTP git server for scripts/deploy.sh --local-git: a CGI bridge to `git http-backend`.

Usage: git-http.py ROOT HOST PORT
  Serves every repository under ROOT at http://HOST:PORT/<name>.git (fetch and clone only). Argo CD matches a
  push webhook only against http(s)/ssh repo URLs, never git://, which is why this exists beside git daemon.

Pushes are refused: no REMOTE_USER is ever set, and `git http-backend` only enables receive-pack for an
authenticated user; they go to the repository on disk. Request bodies may be chunked (git sends large
negotiations that way) or gzip-encoded; both are passed to http-backend as it expects them.
"""
import http.server
import os
import subprocess
import sys


def read_chunked(rfile):
    body = bytearray()
    while True:
        size = int(rfile.readline().split(b";")[0].strip(), 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return bytes(body)
        body += rfile.read(size)
        rfile.readline()  # CRLF after each chunk


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: git makes several requests per fetch
    root = "."

    def backend(self):
        path, _, query = self.path.partition("?")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = read_chunked(self.rfile)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
        sep = b"\r\n\r\n" if b"\r\n\r\n" in out.stdout else b"\n\n"
        head, _, data = out.stdout.partition(sep)
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            if ":" not in line:
                continue
            key, value = line.split(":", 1)
            if key.lower() == "status":
                status = int(value.split()[0])
            else:
                headers.append((key, value.strip()))
        if out.returncode != 0 and not head:
            status, data, headers = 500, out.stderr or b"git http-backend failed\n", [("Content-Type", "text/plain")]
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = backend

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.client_address[0], fmt % args))


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: git-http.py ROOT HOST PORT")
    Handler.root = os.path.abspath(sys.argv[1])
    server = http.server.ThreadingHTTPServer((sys.argv[2], int(sys.argv[3])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
